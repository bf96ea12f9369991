// qbo-poller console: the only script (vendored, no dependencies; CSP script-src 'self').
// 1. "All" / "None" buttons check or uncheck the named checkboxes.
// 2. "Generate" fills a signature key from the browser's CSPRNG.
// 3. The event log's first page refreshes itself every 2 s (rows rendered by the server).
"use strict";
(function () {
  function setAll(name, checked) {
    document.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (box) {
      box.checked = checked;
    });
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) { return; }
    if (button.dataset.check) { setAll(button.dataset.check, true); }
    if (button.dataset.uncheck) { setAll(button.dataset.uncheck, false); }
    if (button.id === "generate-key") {
      var bytes = new Uint8Array(32);
      crypto.getRandomValues(bytes);
      var text = btoa(String.fromCharCode.apply(null, bytes));
      document.getElementById(button.dataset.target).value = "whsec_" + text;
    }
  });
  var rows = document.getElementById("event-rows");
  if (rows && rows.dataset.live) {
    var state = document.getElementById("live-state");
    var refresh = function () {
      fetch(rows.dataset.live, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          // The server escaped every value (Jinja2 autoescape); the CSP blocks inline script.
          if (rows.innerHTML !== html) { rows.innerHTML = html; }
          state.textContent = "Live: new events appear here on their own.";
        })
        .catch(function () { state.textContent = "Live updates paused (retrying)…"; })
        .finally(function () { window.setTimeout(refresh, 2000); });
    };
    window.setTimeout(refresh, 2000);
  }
})();
