"""Prometheus metrics: families, labels, and multiprocess aggregation across forked workers."""

import os
import subprocess
import sys
import textwrap

from ocr_service.metrics import Metrics


def _value(text: str, sample: str) -> float:
    return next(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith(sample + " "))  # fmt: skip


def test_requests_latency_predictions_and_iterations_are_exposed():
    m = Metrics()
    m.observe_request("/v1/predict", "POST", 200, 0.002)
    m.observe_request("/v1/predict", "POST", 200, 0.004)
    m.observe_request("/v1/predict", "POST", 415, 0.001)
    m.count_predictions(["4", "2", "4"])
    m.observe_iterations(12.5)
    text, content_type = m.render()
    text = text.decode()
    assert content_type.startswith("text/plain")
    req = 'ocr_http_requests_total{method="POST",route="/v1/predict",status="%s"}'
    assert _value(text, req % "200") == 2
    assert _value(text, req % "415") == 1
    lat = 'ocr_http_request_duration_seconds_%s{route="/v1/predict",status="200"}'
    assert _value(text, lat % "count") == 2
    assert abs(_value(text, lat % "sum") - 0.006) < 1e-9
    assert _value(text, 'ocr_predictions_total{char="4"}') == 2
    assert _value(text, "ocr_fixed_point_iterations_count") == 1
    assert _value(text, 'ocr_fixed_point_iterations_bucket{le="13.0"}') == 1
    assert _value(text, 'ocr_fixed_point_iterations_bucket{le="8.0"}') == 0


def test_model_info_follows_reloads():
    m = Metrics()
    m.set_model("digits", "aaa", "mlp", "a" * 64)
    m.set_model("digits", "bbb", "rbp", "b" * 64)
    m.count_reload(True)
    m.count_reload(False)
    text = m.render()[0].decode()
    info = 'ocr_model_info{{kind="{}",name="digits",sha256="{}",version="{}"}}'
    assert _value(text, info.format("mlp", "a" * 64, "aaa")) == 0
    assert _value(text, info.format("rbp", "b" * 64, "bbb")) == 1
    assert _value(text, 'ocr_model_reloads_total{result="ok"}') == 1
    assert _value(text, 'ocr_model_reloads_total{result="error"}') == 1


def test_multiprocess_mode_sums_workers_and_forgets_dead_ones_gauges(tmp_path):
    # A fresh interpreter: multiprocess mode is fixed when prometheus_client is first imported.
    script = textwrap.dedent(
        """
        import os
        from ocr_service.metrics import Metrics, mark_process_dead
        m = Metrics()
        m.set_model("digits", "old", "mlp", "0" * 64)    # the master, before forking
        pid = os.fork()
        if pid == 0:                           # a worker: 3 requests, announces its model
            m.set_model("digits", "new", "mlp", "1" * 64)
            for _ in range(3):
                m.observe_request("/v1/predict", "POST", 200, 0.001)
            os._exit(0)
        os.waitpid(pid, 0)
        m.observe_request("/v1/predict", "POST", 200, 0.001)
        before = m.render()[0].decode()
        mark_process_dead(pid)
        after = m.render()[0].decode()
        print(before + "=====" + after)
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    before, after = out.split("=====")
    req = 'ocr_http_requests_total{method="POST",route="/v1/predict",status="200"}'
    assert _value(before, req) == 4
    assert _value(after, req) == 4  # counters survive their process
    new = f'ocr_model_info{{kind="mlp",name="digits",sha256="{"1" * 64}",version="new"}}'
    old = f'ocr_model_info{{kind="mlp",name="digits",sha256="{"0" * 64}",version="old"}}'
    assert _value(before, new) == 1 and _value(before, old) == 1
    assert new not in after  # the only process serving "new" is gone
    assert _value(after, old) == 1


def test_corrections_form_a_confusion_matrix_and_refusals_count_by_code():
    m = Metrics()
    m.count_corrections([("5", "4"), ("5", "4"), ("3", "3")])
    m.count_feedback_refused("feedback_store_full")
    text = m.render()[0].decode()
    assert _value(text, 'ocr_feedback_corrections_total{read_class="4",true_class="5"}') == 2
    assert _value(text, 'ocr_feedback_corrections_total{read_class="3",true_class="3"}') == 1
    assert _value(text, 'ocr_feedback_refused_total{reason="feedback_store_full"}') == 1
