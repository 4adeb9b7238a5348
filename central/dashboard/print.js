// The print button of the printable pages (no inline handlers: the CSP allows scripts from files only).
document.querySelectorAll("[data-print]").forEach(function (b) {
  b.addEventListener("click", function () { window.print(); });
});
