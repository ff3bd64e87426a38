/* Console live page: replaces the queues part with what the server pushes (server-sent events,
   HTML rendered and escaped by HQ). EventSource reconnects by itself. No library. */
(function () {
  "use strict";
  var root = document.getElementById("console-live");
  if (!root || !window.EventSource) { return; }
  var source = new EventSource(root.getAttribute("data-events"));
  source.addEventListener("open", function () { root.setAttribute("data-live", "open"); });
  source.addEventListener("error", function () { root.setAttribute("data-live", "retrying"); });
  source.addEventListener("live", function (e) {
    var data = JSON.parse(e.data);
    root.innerHTML = data.html;
    root.setAttribute("data-updated", String(Date.now()));
  });
}());
