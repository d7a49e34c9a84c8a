// Baton Web UI: live updates of the dashboard and confirmation of operations.
// Served from the agent (no external resources); the pages work without it (a server-side
// confirmation page, a reload for fresh data).
"use strict";
(function () {
  var live = document.getElementById("live");
  var flash = document.getElementById("flash");
  var dialog = document.getElementById("confirm");

  function say(text, ok) {
    if (!flash) return;
    flash.textContent = "";
    var p = document.createElement("p");
    p.className = ok ? "ok" : "error";
    p.textContent = text;
    flash.appendChild(p);
  }

  // Poll the live part with If-None-Match; replace it only when it changed, keeping focus.
  var etag = live ? live.getAttribute("data-etag") : null;
  var busy = false;
  function refresh() {
    if (!live || busy) return;
    busy = true;
    var headers = { "Accept": "text/html" };
    if (etag) headers["If-None-Match"] = etag;
    fetch("/ui/live", { headers: headers, cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { window.location.assign("/ui/login?expired=1"); return null; }
        if (r.status === 304 || !r.ok) return null;
        etag = r.headers.get("ETag");
        return r.text();
      })
      .then(function (html) {
        var stamp = document.getElementById("updated");
        if (stamp) stamp.textContent = "Last checked " + new Date().toLocaleTimeString() + ".";
        if (html === null || html === undefined) return;
        var focused = document.activeElement;
        var fid = focused && live.contains(focused) ? focused.id || focused.name : null;
        live.innerHTML = html;
        live.setAttribute("data-etag", etag || "");
        if (fid) {
          var again = document.getElementById(fid) || live.querySelector("[name='" + fid + "']");
          if (again) again.focus();
        }
      })
      .catch(function () { /* the next poll retries */ })
      .then(function () { busy = false; });
  }
  if (live) window.setInterval(refresh, 2000);

  function ask(text) {
    return new Promise(function (resolve) {
      if (!dialog || typeof dialog.showModal !== "function") { resolve(window.confirm(text)); return; }
      document.getElementById("confirm-text").textContent = text;
      dialog.returnValue = "";
      dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        resolve(dialog.returnValue === "ok");
      });
      dialog.showModal();
      document.getElementById("confirm-ok").focus();
    });
  }

  // Operations: confirm in a dialog, send with fetch, report in the status region.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains("op")) return;
    ev.preventDefault();
    var text = form.getAttribute("data-confirm") || "Are you sure?";
    var sel = form.querySelector("select[name='to']");
    if (sel) text = text.replace("the chosen server", sel.value);
    ask(text).then(function (yes) {
      if (!yes) return;
      var data = new URLSearchParams(new FormData(form));
      data.set("confirm", "yes");
      fetch("/ui/op", {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { "Accept": "application/json" }
      })
        .then(function (r) {
          if (r.status === 401) { window.location.assign("/ui/login?expired=1"); return null; }
          return r.json().then(function (j) {
            var m = j.message || (j.error && j.error.message) || ("HTTP " + r.status);
            say(m, r.ok && j.ok);
          });
        })
        .catch(function (e) { say("The agent did not answer: " + e, false); })
        .then(function () { etag = null; refresh(); });
    });
  });
})();
