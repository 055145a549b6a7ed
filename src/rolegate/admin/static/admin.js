// rolegate admin: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // Ask before destructive buttons (the server still asks for a preview first).
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  });
  // Filter the rows of a table from a text box: <input data-filter="table-id">.
  document.querySelectorAll("input[data-filter]").forEach(function (box) {
    var table = document.getElementById(box.getAttribute("data-filter"));
    if (!table) { return; }
    box.addEventListener("input", function () {
      var q = box.value.toLowerCase();
      table.querySelectorAll("tbody tr").forEach(function (row) {
        row.hidden = q !== "" && row.textContent.toLowerCase().indexOf(q) < 0;
      });
    });
  });
})();
