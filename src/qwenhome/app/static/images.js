// qwenhome image panel: prompt, negative prompt, preset, steps, seed; live
// progress from the job's server-sent events (one per denoising step, as the
// pipeline reports them); a gallery of stored results with their parameters.
//
// Mounting: load this script; it adds images.css (from beside itself) and fills
// the first element matching [data-qwenhome-panel="images"] or #images-panel,
// else a new section in the page's extension container (window.qwenhome.container(),
// see app.js), else in <main> or <body>. window.qwenhomeImages.mount(el) mounts by hand.
// It talks only to the image router's routes (see qwenhome/images/api.py).
(function () {
  "use strict";
  const scriptSrc = document.currentScript && document.currentScript.src;

  function h(tag, attrs, children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children || []) el.append(c);
    return el;
  }

  async function api(method, url, body) {
    const opts = { method, headers: {} };
    if (body instanceof FormData) {
      opts.body = body; // multipart: the browser sets the boundary
    } else if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const res = await fetch(url, opts);
    const data = await res.json().catch(() => ({}));
    if (!res.ok) {
      const err = data.error || {};
      const detail = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : "";
      throw Object.assign(new Error(err.message || detail || res.statusText), {
        code: err.code || "http-" + res.status,
        hint: err.hint || "",
      });
    }
    return data;
  }

  function describe(p) {
    const parts = [p.size || p.width + "x" + p.height, "seed " + p.seed, p.num_inference_steps + " steps", "cfg " + p.true_cfg_scale];
    if (p.mode && p.mode !== "text") parts.unshift(p.mode), parts.push("strength " + p.strength);
    return parts.join(" · ");
  }

  function mount(root) {
    if (!root || root.dataset.qhMounted) return;
    root.dataset.qhMounted = "1";
    root.classList.add("qh-images");

    const status = h("p", { class: "qh-status", "data-testid": "images-status", text: "loading image model…" });
    const prompt = h("textarea", { id: "qh-prompt", rows: 3, required: true, placeholder: "a red fox in the snow, golden hour", "data-testid": "images-prompt" });
    const negative = h("input", { id: "qh-negative", type: "text", placeholder: "blurry, low quality", "data-testid": "images-negative" });
    const preset = h("select", { id: "qh-preset", "data-testid": "images-preset" });
    const steps = h("input", { id: "qh-steps", type: "number", min: 1, max: 150, value: 20, "data-testid": "images-steps" });
    const seed = h("input", { id: "qh-seed", type: "number", min: 0, placeholder: "random", "data-testid": "images-seed" });
    const cfg = h("input", { id: "qh-cfg", type: "number", min: 1, max: 20, step: 0.5, value: 4, "data-testid": "images-cfg" });
    const source = h("input", { id: "qh-source", type: "file", accept: "image/png,image/jpeg,image/webp", "data-testid": "images-source" });
    const mask = h("input", { id: "qh-mask", type: "file", accept: "image/png,image/jpeg,image/webp", disabled: true, "data-testid": "images-mask" });
    const strength = h("input", { id: "qh-strength", type: "number", min: 0.05, max: 1, step: 0.05, value: 0.6, disabled: true, "data-testid": "images-strength" });
    const go = h("button", { type: "submit", "data-testid": "images-generate", text: "Generate" });
    const cancel = h("button", { type: "button", hidden: true, "data-testid": "images-cancel", text: "Cancel" });
    const bar = h("progress", { max: 1, value: 0, "data-testid": "images-progress" });
    const progressText = h("span", { class: "qh-progress-text", "data-testid": "images-progress-text" });
    const error = h("p", { class: "qh-error", role: "alert", hidden: true, "data-testid": "images-error" });
    const gallery = h("div", { class: "qh-gallery", "data-testid": "images-gallery" });
    let current = null; // { id, source }

    function label(text, input) {
      return h("label", {}, [h("span", { text }), input]);
    }

    function showError(e) {
      error.hidden = false;
      error.textContent = "[" + (e.code || "error") + "] " + e.message + (e.hint ? " — " + e.hint : "");
    }

    function busy(on) {
      go.disabled = on;
      cancel.hidden = !on;
    }

    let shownModel = null;
    async function loadStatus() {
      try {
        const s = await api("GET", "/api/images/status");
        if (s.sizes && s.model !== shownModel) {
          preset.replaceChildren(
            ...Object.entries(s.sizes.presets).map(([name, p]) =>
              h("option", { value: p.size, selected: name === s.sizes.default, text: name + " (" + p.size + ")" })
            )
          );
          steps.value = s.default_steps;
          shownModel = s.model;
        }
        const pol = s.policy;
        status.textContent =
          s.state === "ready"
            ? s.model + (s.note ? " (" + s.note + ")" : "") + " · " + pol.device + " " + pol.dtype + (pol.offload !== "none" ? " · " + pol.offload + " offload" : "") + (pol.slow ? " · " + pol.reason : "")
            : s.state === "failed"
            ? "image model failed to load: " + (s.error && s.error.message)
            : s.state === "none"
            ? "no image model is served: pull one (e.g. Qwen/Qwen-Image) in Models, then press Serve"
            : s.state === "restarting"
            ? "image engine restarting (it stopped: " + (s.worker && s.worker.last_exit) + ")"
            : "loading image model " + s.model + "…";
        if (!current) go.disabled = s.state !== "ready" && s.state !== "loading" && s.state !== "restarting";
        // Follow what the Models panel switches, and a load or restart to its end.
        setTimeout(loadStatus, s.state === "ready" || s.state === "failed" ? 5000 : 1000);
      } catch (e) {
        status.textContent = "image engine unavailable: " + e.message;
      }
    }

    async function loadGallery() {
      const data = await api("GET", "/api/images?limit=48");
      gallery.replaceChildren(
        ...data.images.flatMap((rec) =>
          rec.images.map((img) => {
            const p = { ...rec, seed: img.seed };
            return h("figure", { class: "qh-card", "data-testid": "images-card", "data-job": rec.job }, [
              h("a", { href: img.url, target: "_blank", rel: "noopener" }, [h("img", { src: img.url, alt: rec.prompt, loading: "lazy", width: rec.width, height: rec.height })]),
              h("figcaption", {}, [
                h("span", { class: "qh-card-prompt", text: rec.prompt }),
                rec.negative_prompt ? h("span", { class: "qh-card-neg", text: "not: " + rec.negative_prompt }) : "",
                h("span", { class: "qh-card-params", "data-testid": "images-card-params", text: describe(p) }),
                h("span", { class: "qh-card-actions" }, [
                  h("a", { href: img.url, download: "qwen-image-" + rec.job.slice(0, 8) + "-" + img.name, "data-testid": "images-download", text: "Download" }),
                  h("button", { type: "button", text: "Reuse", onclick: () => reuse(p) }),
                ]),
              ]),
            ]);
          })
        )
      );
    }

    function reuse(p) {
      prompt.value = p.prompt || "";
      negative.value = p.negative_prompt || "";
      steps.value = p.num_inference_steps;
      seed.value = p.seed;
      cfg.value = p.true_cfg_scale;
      if ([...preset.options].some((o) => o.value === p.size)) preset.value = p.size;
    }

    function follow(job) {
      const src = new EventSource("/api/jobs/" + job.id + "/events");
      current = { id: job.id, source: src };
      bar.max = job.progress.total;
      bar.value = 0;
      progressText.textContent = "queued";
      const finish = () => {
        src.close();
        current = null;
        busy(false);
      };
      src.addEventListener("started", () => (progressText.textContent = "step 0/" + bar.max));
      src.addEventListener("step", (ev) => {
        const d = JSON.parse(ev.data);
        bar.max = d.total;
        bar.value = d.step;
        progressText.textContent = "step " + d.step + "/" + d.total;
      });
      src.addEventListener("succeeded", () => {
        progressText.textContent = "done";
        finish();
        loadGallery().catch(showError);
      });
      src.addEventListener("failed", (ev) => {
        const d = JSON.parse(ev.data);
        progressText.textContent = "failed";
        showError(d.error || { message: "generation failed" });
        finish();
      });
      src.addEventListener("cancelled", () => {
        progressText.textContent = "cancelled";
        finish();
      });
    }

    async function submit(ev) {
      ev.preventDefault();
      error.hidden = true;
      busy(true);
      try {
        const body = {
          prompt: prompt.value,
          negative_prompt: negative.value || null,
          size: preset.value || null,
          num_inference_steps: Number(steps.value),
          true_cfg_scale: Number(cfg.value),
          seed: seed.value === "" ? null : Number(seed.value),
        };
        if (source.files.length) {
          // Image-to-image (inpaint with a mask): the upload travels in the
          // request; the output keeps the upload's size (on the model's grid).
          const form = new FormData();
          for (const [k, v] of Object.entries(body)) if (v !== null && k !== "size") form.append(k, String(v));
          form.append("strength", strength.value);
          form.append("image", source.files[0]);
          if (mask.files.length) form.append("mask", mask.files[0]);
          follow(await api("POST", "/api/images/edit-jobs", form));
        } else {
          follow(await api("POST", "/api/images/jobs", body));
        }
      } catch (e) {
        showError(e);
        busy(false);
      }
    }

    source.addEventListener("change", () => {
      const on = source.files.length > 0;
      mask.disabled = strength.disabled = !on;
      preset.disabled = on; // the output follows the uploaded image's size
      if (!on) mask.value = "";
    });

    cancel.addEventListener("click", () => {
      if (current) api("POST", "/api/jobs/" + current.id + "/cancel").catch(showError);
    });

    root.replaceChildren(
      h("h2", { text: "Images" }),
      status,
      h("form", { class: "qh-form", onsubmit: submit, "data-testid": "images-form" }, [
        label("Prompt", prompt),
        label("Negative prompt", negative),
        h("div", { class: "qh-row" }, [label("Aspect ratio", preset), label("Steps", steps), label("Seed", seed), label("CFG", cfg)]),
        h("div", { class: "qh-row" }, [label("Start from image (optional)", source), label("Mask (white = repaint)", mask), label("Strength", strength)]),
        h("div", { class: "qh-row" }, [go, cancel, bar, progressText]),
        error,
      ]),
      gallery
    );
    loadStatus();
    loadGallery().catch(showError);
  }

  function addStylesheet() {
    if (!scriptSrc || document.querySelector('link[href$="images.css"]')) return;
    document.head.append(h("link", { rel: "stylesheet", href: new URL("images.css", scriptSrc).href }));
  }

  function autoMount() {
    addStylesheet();
    let root = document.querySelector('[data-qwenhome-panel="images"], #images-panel');
    if (!root) {
      root = h("section", { id: "images-panel", "aria-label": "Images" });
      const host = (window.qwenhome && window.qwenhome.container && window.qwenhome.container()) ||
        document.querySelector("main") || document.body;
      host.append(root);
    }
    mount(root);
  }

  window.qwenhomeImages = { mount };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", autoMount);
  else autoMount();
})();
