// The "Hide all code" button of each notebook page's banner: hides (or shows again) the
// source of every code cell, leaving the outputs. The choice is kept for the next page.
(function () {
  "use strict";
  var KEY = "dnbook-hide-code";
  function apply(hidden) {
    document.body.classList.toggle(KEY, hidden);
    document.querySelectorAll("button.dnbook-toggle-code").forEach(function (button) {
      button.textContent = hidden ? "Show all code" : "Hide all code";
      button.setAttribute("aria-pressed", hidden ? "true" : "false");
    });
  }
  function stored() {
    try { return window.localStorage.getItem(KEY) === "1"; } catch (e) { return false; }
  }
  function store(hidden) {
    try { window.localStorage.setItem(KEY, hidden ? "1" : "0"); } catch (e) { /* private mode */ }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelectorAll("button.dnbook-toggle-code");
    if (!buttons.length) { return; }
    apply(stored());
    buttons.forEach(function (button) {
      button.addEventListener("click", function () {
        var hidden = !document.body.classList.contains(KEY);
        store(hidden);
        apply(hidden);
      });
    });
  });
})();
