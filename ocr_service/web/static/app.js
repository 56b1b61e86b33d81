// The drawing page: draw (mouse, pen or touch via pointer events) or upload, then show the
// recognised text, a confidence bar per class and the normalised input the model saw; where
// the server keeps corrections, the user can say what each character really is.
"use strict";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const penWidth = document.getElementById("pen-width");
const resultText = document.getElementById("result-text");
const statusLine = document.getElementById("status");
const charactersBox = document.getElementById("characters");
const boxesLayer = document.getElementById("boxes");
const correction = document.getElementById("correction");
const correctionStatus = document.getElementById("correction-status");
const SQUARE = 280;
const WIDE = 840;
let classCount = 10;
let feedbackOn = false;
// the image last read, to send with a correction, and how it was placed on the canvas
let lastImage = null;
let placement = { scale: 1, dx: 0, dy: 0 };
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

function forgetReading() {
  resultText.textContent = "–";
  charactersBox.replaceChildren();
  boxesLayer.replaceChildren();
  correction.hidden = true;
  correctionStatus.textContent = "";
}

function reset() {
  clearTimeout(pending);
  clearCanvas();
  forgetReading();
  setStatus("");
  lastImage = null;
  placement = { scale: 1, dx: 0, dy: 0 };
}

document.getElementById("clear").addEventListener("click", reset);

// A wide sheet for a row of characters (a phone number, an amount); resizing clears it.
document.getElementById("wide").addEventListener("change", (event) => {
  canvas.width = event.target.checked ? WIDE : SQUARE;
  document.body.classList.toggle("wide", event.target.checked);
  reset();
});

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (!file) return;
  clearTimeout(pending);
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    clearCanvas();
    const scale = Math.min(canvas.width / img.width, canvas.height / img.height);
    const w = img.width * scale;
    const h = img.height * scale;
    placement = { scale, dx: (canvas.width - w) / 2, dy: (canvas.height - h) / 2 };
    ctx.drawImage(img, placement.dx, placement.dy, w, h);
    URL.revokeObjectURL(url);
  };
  img.src = url;
  recognise(file, file.type || "application/octet-stream");
  event.target.value = "";
});

async function recognise(body, contentType, retried = false) {
  if (!body) return;
  if (contentType === "image/png" && body instanceof Blob && !(body instanceof File)) {
    placement = { scale: 1, dx: 0, dy: 0 }; // a drawing: its pixels are the canvas's
  }
  lastImage = { body, contentType };
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
      forgetReading();
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
  boxesLayer.replaceChildren(...data.characters.map(renderBox));
  correction.hidden = !feedbackOn || data.characters.length === 0;
  correctionStatus.textContent = "";
}

// The character's box over the canvas, numbered like its card below.
function renderBox(character, i) {
  const [x, y, w, h] = character.box;
  const css = canvas.clientWidth / canvas.width; // CSS pixels per canvas pixel, inside the border
  const box = document.createElement("div");
  box.className = "box";
  box.textContent = String(i + 1);
  box.style.left = `${(x * placement.scale + placement.dx) * css}px`;
  box.style.top = `${(y * placement.scale + placement.dy) * css}px`;
  box.style.width = `${w * placement.scale * css}px`;
  box.style.height = `${h * placement.scale * css}px`;
  return box;
}

function renderCharacter(character, i) {
  const row = document.createElement("div");
  row.className = "character";
  row.dataset.char = character.char;

  const fix = document.createElement("input");
  fix.className = "fix";
  fix.maxLength = 1;
  fix.size = 1;
  fix.value = character.char === "?" ? "" : character.char;
  fix.setAttribute("aria-label", `what character ${i + 1} really is`);
  const reading = document.createElement("div");
  reading.className = "reading";
  reading.append(`${i + 1}: read "${character.char}"`, fix);

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
  row.append(reading, seen, bars);
  return row;
}

async function sendCorrection() {
  const fields = [...charactersBox.querySelectorAll(".fix")];
  const text = fields.map((field) => field.value.trim()).join("");
  if (!lastImage || text.length !== fields.length) {
    correctionStatus.textContent = "type one character in every field";
    correctionStatus.classList.add("error");
    return;
  }
  correctionStatus.classList.remove("error");
  correctionStatus.textContent = "saving…";
  try {
    const response = await fetch(`v1/feedback?text=${encodeURIComponent(text)}`, {
      method: "POST",
      headers: { "Content-Type": lastImage.contentType },
      body: lastImage.body,
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : response.status);
    correctionStatus.textContent =
      `saved ${data.stored.length} character(s): thank you, the next model learns them`;
  } catch (err) {
    correctionStatus.textContent = `not saved: ${err.message}`;
    correctionStatus.classList.add("error");
  }
}

document.getElementById("send-correction").addEventListener("click", sendCorrection);

async function loadFeedback() {
  try {
    feedbackOn = (await fetch("v1/feedback")).ok;
  } catch (err) {
    feedbackOn = false;
  }
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
loadFeedback();
