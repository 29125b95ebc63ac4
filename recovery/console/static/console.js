// Keeps a console page live over Server-Sent Events: the page names its view in
// <body data-live>; the server sends ready-made, escaped HTML for the part that changed.
"use strict";
(function () {
  const view = document.body.dataset.live;
  if (!view || !window.EventSource) return;
  const params = new URLSearchParams(window.location.search);
  params.set("view", view);
  const table = document.getElementById("events");
  if (view === "events" && table) params.set("newer", table.dataset.newest || "");
  const source = new EventSource(window.location.pathname.replace(/\/[^/]*$/, "") + "/stream?" + params);
  const swap = (id, html) => { const el = document.getElementById(id); if (el) el.innerHTML = html; };
  source.addEventListener("overview", (e) => swap("live-overview", JSON.parse(e.data).html));
  source.addEventListener("recovery", (e) => swap("live-recovery", JSON.parse(e.data).html));
  source.addEventListener("rows", (e) => {
    const body = table && table.tBodies[0];
    if (!body) return;
    const template = document.createElement("template");
    template.innerHTML = JSON.parse(e.data).html;
    body.prepend(template.content);
  });
})();
