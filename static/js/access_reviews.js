// Access review queue (issue #18): j/k move between items, x ticks one, Enter shows its evidence;
// "All on this page" ticks every decidable item; the confirmation restates how many are ticked.
// No inline scripts (the CSP forbids them).
(function () {
  "use strict";

  function items() {
    return Array.from(document.querySelectorAll("#access-review-table .certify-item"));
  }

  function typing(target) {
    const tag = (target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function select(item) {
    items().forEach((i) => i.classList.remove("selected"));
    if (!item) return;
    item.classList.add("selected");
    item.focus({ preventScroll: false });
  }

  document.addEventListener("keydown", (event) => {
    if (!document.getElementById("access-review-table")) return;
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    if (document.querySelector(".modal.show")) return;
    const all = items();
    if (!all.length) return;
    const current = document.activeElement && document.activeElement.closest(".certify-item");
    const index = current ? all.indexOf(current) : -1;
    if (event.key === "j") { select(all[Math.min(index + 1, all.length - 1)]); event.preventDefault(); return; }
    if (event.key === "k") { select(all[Math.max(index - 1, 0)]); event.preventDefault(); return; }
    if (!current) return;
    if (event.key === "x") {
      const tick = current.querySelector(".item-tick");
      if (tick) { tick.checked = !tick.checked; event.preventDefault(); }
      return;
    }
    if (event.key === "Enter" && event.target === current) {
      const expand = current.querySelector(".expand-btn");
      if (expand) { expand.click(); event.preventDefault(); }
    }
  });

  document.addEventListener("change", (event) => {
    if (event.target.id !== "tick-all") return;
    document.querySelectorAll("#access-review-table .item-tick").forEach((t) => { t.checked = event.target.checked; });
  });

  document.addEventListener("show.bs.modal", (event) => {
    if (event.target.id !== "confirm-decision") return;
    const count = document.querySelectorAll("#access-review-table .item-tick:checked").length;
    const label = document.getElementById("ticked-count");
    if (label) label.textContent = String(count);
  });
})();
