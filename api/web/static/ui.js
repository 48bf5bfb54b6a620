// Clicking an item on the journey chart opens its details below and marks it.
document.addEventListener("click", function (event) {
  var link = event.target.closest && event.target.closest("[data-target]");
  if (!link) return;
  var id = (link.getAttribute("data-target") || "").replace(/^#/, "");
  var item = document.getElementById(id);
  if (!item) return;
  event.preventDefault();
  document.querySelectorAll(".picked").forEach(function (el) { el.classList.remove("picked"); });
  link.classList.add("picked");
  var details = item.querySelector("details");
  if (details) details.open = true;
  history.replaceState(null, "", "#" + id);
  item.scrollIntoView({ behavior: "smooth", block: "center" });
  item.classList.add("picked");
});

// the referral form's print button (no inline script: the page's policy refuses it)
document.addEventListener("DOMContentLoaded", function () {
  var button = document.getElementById("print-form");
  if (button) button.addEventListener("click", function () { window.print(); });
});
