// The drawing page: draw (mouse, pen or touch via pointer events) or upload, then show the
// recognised text, a confidence bar per class and the normalised input the model saw.
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const penWidth = document.getElementById("pen-width");
const resultText = document.getElementById("result-text");
const statusLine = document.getElementById("status");
const charactersBox = document.getElementById("characters");
let classCount = 10;
let modelVersion = null;
let drawing = false;
let dirty = false;
let pending = null;

function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  dirty = false;
}

function setStatus(message, isError) {
  statusLine.textContent = message;
  statusLine.classList.toggle("error", Boolean(isError));
}

function point(event) {
  const rect = canvas.getBoundingClientRect();
  return [
    (event.clientX - rect.left) * (canvas.width / rect.width),
    (event.clientY - rect.top) * (canvas.height / rect.height),
  ];
}

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = true;
  clearTimeout(pending);
  const [x, y] = point(event);
  ctx.lineWidth = Number(penWidth.value);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x, y);
  ctx.stroke();
  dirty = true;
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = point(event);
  ctx.lineTo(x, y);
  ctx.stroke();
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  // Wait briefly so a digit drawn in several strokes is sent once.
  pending = setTimeout(() => canvas.toBlob((blob) => recognise(blob, "image/png")), 350);
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

document.getElementById("clear").addEventListener("click", () => {
  clearTimeout(pending);
  clearCanvas();
  resultText.textContent = "–";
  charactersBox.replaceChildren();
  setStatus("");
});

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    clearCanvas();
    const scale = Math.min(canvas.width / img.width, canvas.height / img.height);
    const w = img.width * scale;
    const h = img.height * scale;
    ctx.drawImage(img, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  img.src = url;
  recognise(file, file.type || "application/octet-stream");
  event.target.value = "";
});

async function recognise(body, contentType, retried = false) {
  if (!body) return;
  setStatus("recognising…");
  try {
    const response = await fetch(`v1/predict?top_k=${classCount}&include_input=1`, {
      method: "POST",
      headers: { "Content-Type": contentType },
      body,
    });
    const data = await response.json();
    if (!response.ok) {
      // the served model may have been swapped for one with fewer classes (top_k too big)
      if (!retried && data.error && data.error.code === "bad_parameter") {
        await loadModel();
        return recognise(body, contentType, true);
      }
      resultText.textContent = "–";
      charactersBox.replaceChildren();
      setStatus(data.error ? data.error.message : `HTTP ${response.status}`, true);
      return;
    }
    if (data.model.version !== modelVersion) loadModel();
    show(data);
  } catch (err) {
    setStatus(`request failed: ${err}`, true);
  }
}

function show(data) {
  resultText.textContent = data.text || "–";
  setStatus(`${data.characters.length} character(s) in ${data.elapsed_ms.toFixed(1)} ms`);
  charactersBox.replaceChildren(...data.characters.map(renderCharacter));
}

function renderCharacter(character) {
  const row = document.createElement("div");
  row.className = "character";
  row.dataset.char = character.char;

  const seen = document.createElement("div");
  seen.className = "seen";
  seen.append(inputCanvas(character.input), `model input, "${character.char}"`);

  const bars = document.createElement("div");
  bars.className = "bars";
  character.top.forEach((entry, i) => {
    const bar = document.createElement("div");
    bar.className = i === 0 ? "bar best" : "bar";
    bar.dataset.char = entry.char;
    bar.dataset.p = entry.p;
    const label = document.createElement("span");
    label.textContent = entry.char;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(entry.p * 100).toFixed(1)}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(entry.p * 100).toFixed(1)}%`;
    bar.append(label, track, pct);
    bars.append(bar);
  });
  row.append(seen, bars);
  return row;
}

function inputCanvas(rows) {
  const c = document.createElement("canvas");
  const h = rows.length;
  const w = rows[0].length;
  c.width = w;
  c.height = h;
  const image = c.getContext("2d").createImageData(w, h);
  rows.flat().forEach((ink, i) => {
    const grey = Math.round(255 * (1 - ink));
    image.data.set([grey, grey, grey, 255], i * 4);
  });
  c.getContext("2d").putImageData(image, 0, 0);
  return c;
}

async function loadModel() {
  try {
    const response = await fetch("v1/model");
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : response.status);
    classCount = data.classes.length;
    modelVersion = data.version;
    const accuracy = data.metrics && data.metrics.test_accuracy;
    document.getElementById("model").textContent =
      `model ${data.name} ${data.version} (${data.kind}, ${classCount} classes` +
      (accuracy ? `, test accuracy ${(accuracy * 100).toFixed(1)}%)` : ")");
  } catch (err) {
    document.getElementById("model").textContent = `no model: ${err.message}`;
  }
}

clearCanvas();
loadModel();
