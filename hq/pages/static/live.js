/* Live status page: updates from server-sent events (EventSource reconnects by itself), a
   banner and a short chime when the turn is near or the ticket is called. No library. */
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root || !window.EventSource) { return; }
  var last = root.getAttribute("data-alert") || "";
  var audio = null;
  var chimes = 0;
  var soundButton = document.getElementById("sound");

  function ensureAudio() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!audio && Ctx) { audio = new Ctx(); }
    if (audio && audio.state === "suspended") { audio.resume(); }
    return audio;
  }

  function chime() {
    chimes += 1;
    document.documentElement.setAttribute("data-chimes", String(chimes));
    var ctx = ensureAudio();
    if (!ctx) { return; }
    [0, 0.25].forEach(function (at, i) {
      var osc = ctx.createOscillator();
      var gain = ctx.createGain();
      osc.frequency.value = i ? 660 : 880;
      gain.gain.setValueAtTime(0.2, ctx.currentTime + at);
      gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + at + 0.4);
      osc.connect(gain).connect(ctx.destination);
      osc.start(ctx.currentTime + at);
      osc.stop(ctx.currentTime + at + 0.45);
    });
  }

  function text(id, value) {
    var el = document.getElementById(id);
    if (el && el.textContent !== value) { el.textContent = value; }
  }

  function render(s) {
    text("label", s.label);
    text("service", s.service);
    text("position", s.position);
    text("ahead", s.ahead);
    text("wait", s.wait);
    var headline = document.getElementById("headline");
    headline.textContent = s.headline;
    headline.className = "banner" + (s.alert ? " banner-" + s.alert : "");
    var offline = document.getElementById("offline");
    offline.textContent = s.offline || "";
    offline.hidden = !s.offline;
    var list = document.getElementById("serving");
    while (list.firstChild) { list.removeChild(list.firstChild); }
    if (!s.serving.length) {
      var idle = document.createElement("li");
      idle.className = "muted";
      idle.textContent = document.getElementById("idle-text").textContent;
      list.appendChild(idle);
    }
    s.serving.forEach(function (x) {
      var li = document.createElement("li");
      var label = document.createElement("span");
      label.className = "label";
      label.textContent = x.label;
      li.appendChild(label);
      li.appendChild(document.createTextNode(" " + x.counter));
      list.appendChild(li);
    });
    var alert = s.alert || "";
    root.setAttribute("data-alert", alert);
    root.setAttribute("data-status", s.status);
    if (alert && alert !== last) { chime(); }
    last = alert;
  }

  if (soundButton) {
    soundButton.hidden = false;
    soundButton.addEventListener("click", function () { ensureAudio(); soundButton.hidden = true; });
  }
  var source = new EventSource(root.getAttribute("data-events"));
  source.addEventListener("status", function (e) { render(JSON.parse(e.data)); });
  source.addEventListener("open", function () { root.setAttribute("data-live", "open"); });
  source.addEventListener("error", function () { root.setAttribute("data-live", "reconnecting"); });
})();
