# The README's two commands: `make run` and `make test`. Both bootstrap .venv themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OCR_PORT ?= 8000
export OCR_PORT

.PHONY: run test lint model bench clean browser-deps deploy-deps fonts screenshot retrain

$(BIN)/ocr-serve: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## Serve the shipped model on http://127.0.0.1:$(OCR_PORT)
run: $(BIN)/ocr-serve
	$(BIN)/ocr-serve --port $(OCR_PORT)

## Install browser, deployment and font packages if missing, then run the whole test suite
test: $(VENV)/.dev-installed browser-deps deploy-deps fonts
	$(BIN)/ruff check ocr_service ocr_testing tests scripts
	$(BIN)/python -m pytest

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver; }

# Debian's handwriting fonts: the styled digits the shipped model trains on (ocr_service/styles.py)
FONT_PACKAGES := fonts-bwht fonts-breip fonts-comic-neue fonts-dancingscript fonts-dkg-handwriting \
  fonts-humor-sans fonts-kaushanscript fonts-klee fonts-kristi fonts-rufscript
fonts:
	@dpkg -s $(FONT_PACKAGES) >/dev/null 2>&1 || { \
	  echo "installing Debian handwriting fonts for styled training digits"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(FONT_PACKAGES); }

# podman & co. build and run the image (tests/e2e/test_dockerfile.py), haproxy fronts replicas
# (tests/e2e/test_haproxy.py); the tests skip, saying why, where these cannot be installed
DEPLOY_TOOLS := podman buildah runc debootstrap haproxy
deploy-deps:
	@missing=; for tool in $(DEPLOY_TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian$$missing for the deployment tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $$missing; } || \
	    echo "could not install$$missing: those tests will be skipped"; fi

## Re-take docs/screenshot.png (shown in the README) in headless Chromium
screenshot: $(VENV)/.dev-installed browser-deps
	OCR_SCREENSHOT=docs/screenshot.png $(BIN)/python -m pytest -q tests/e2e/test_web_browser.py

## Re-train the shipped model models/default on mnist5k (bit-reproducible: one BLAS thread)
model: $(VENV)/.dev-installed fonts
	OPENBLAS_NUM_THREADS=1 $(BIN)/ocr-train --dataset mnist5k --features gradients+concavity --augment \
	  --negatives 1500 --styles 1500 --epochs 100 --keep last --seed 0 --name mnist5k-mlp --quiet \
	  --out models/default

## Fine-tune the served model on users' corrections; writes it only if mnist5k accuracy holds
## (FEEDBACK=folder, default $$OCR_FEEDBACK_DIR; MODEL=served artifact, default models/default)
FEEDBACK ?= $(OCR_FEEDBACK_DIR)
MODEL ?= models/default
retrain: $(VENV)/.dev-installed
	OPENBLAS_NUM_THREADS=1 $(BIN)/ocr-feedback retrain --feedback "$(FEEDBACK)" --model "$(MODEL)"

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check ocr_service ocr_testing tests scripts

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
