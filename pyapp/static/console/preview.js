/* Widget preview page: open the chat panel once the widget has booted. */
(function () {
  "use strict";
  var tries = 0;
  (function open() {
    if (window.Parley && window.Parley.open) { window.Parley.open(); return; }
    if (tries++ < 50) { setTimeout(open, 100); }
  })();
})();
