// dbportal UI behaviour. No inline scripts anywhere (the CSP forbids them): everything lives here.
(function () {
  "use strict";

  function typing(target) {
    const tag = (target.tagName || "").toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function modalOpen() {
    return document.querySelector(".modal.show") !== null;
  }

  // --- review queue: j/k move, Enter expands, a/r open approve / reject -----------------------
  function queueItems() {
    return Array.from(document.querySelectorAll("#review-table .review-item"));
  }

  function currentItem() {
    const items = queueItems();
    const focused = document.activeElement && document.activeElement.closest(".review-item");
    return focused || items.find((i) => i.classList.contains("selected")) || null;
  }

  function selectItem(item) {
    queueItems().forEach((i) => i.classList.remove("selected"));
    if (!item) return;
    item.classList.add("selected");
    item.focus({ preventScroll: false });
  }

  function queueKey(event) {
    const items = queueItems();
    if (!items.length) return false;
    const current = currentItem();
    const index = current ? items.indexOf(current) : -1;
    if (event.key === "j") { selectItem(items[Math.min(index + 1, items.length - 1)]); return true; }
    if (event.key === "k") { selectItem(items[Math.max(index - 1, 0)]); return true; }
    if (!current) return false;
    if (event.key === "a" || event.key === "r") {
      const button = current.querySelector(`[data-action="${event.key === "a" ? "approve" : "reject"}"]`);
      if (button) button.click();
      return true;
    }
    if (event.key === "Enter" && event.target === current) {
      const expand = current.querySelector(".expand-btn");
      if (expand) expand.click();
      return true;
    }
    return false;
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target) || modalOpen()) return;
    if (event.key === "/") {
      const search = document.getElementById("global-search");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
      return;
    }
    if (document.getElementById("review-table") && queueKey(event)) event.preventDefault();
  });

  // After a decision the reviewer lands on the next item of the queue (#19): /reviews/#review-N.
  document.addEventListener("DOMContentLoaded", () => {
    const match = /^#review-(\d+)$/.exec(window.location.hash);
    const item = match && document.getElementById(`review-${match[1]}`);
    if (item && item.classList.contains("review-item")) selectItem(item);
  });

  // Focus the comment box when a confirmation dialog opens.
  document.addEventListener("shown.bs.modal", (event) => {
    const box = event.target.querySelector("textarea[name=comment], input:not([type=hidden])");
    if (box) box.focus();
  });

  // --- copy buttons -----------------------------------------------------------------------------
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-copy-target]");
    if (!button) return;
    const source = document.getElementById(button.dataset.copyTarget);
    if (!source) return;
    const text = "value" in source && source.value !== undefined ? source.value : source.innerText;
    const done = () => {
      const label = button.innerHTML;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(() => { button.innerHTML = label; button.classList.remove("copied"); }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text.trim()).then(done, () => fallbackCopy(source, done));
    } else {
      fallbackCopy(source, done);
    }
  });

  function fallbackCopy(source, done) {
    // Plain-HTTP demo: the async clipboard API is not available; select and copy the text instead.
    const area = document.createElement("textarea");
    area.value = ("value" in source ? source.value : source.innerText).trim();
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } finally { area.remove(); }
  }

  // --- new request: re-render the fields when instance / database / schema changes -------------
  document.addEventListener("change", (event) => {
    const field = event.target;
    if (!field.matches || !field.matches("#request-form [data-refresh]")) return;
    const form = field.closest("form");
    if (!window.htmx || !form) return;
    window.htmx.ajax("POST", form.dataset.fieldsUrl, { source: form, target: "#request-fields", swap: "innerHTML" })
      .then(() => {
        const again = document.getElementById(field.id);
        if (again) again.focus();
        document.body.dispatchEvent(new Event("fields-refreshed"));
      });
  });

  // The tables list only matters when "Only these tables" is chosen.
  function syncTables() {
    const boxes = document.querySelectorAll("#request-form [name=tables]");
    const mode = document.querySelector("#request-form input[name=tables_mode]:checked");
    boxes.forEach((box) => { box.disabled = !mode || mode.value !== "list"; });
  }
  document.addEventListener("change", (event) => {
    if (event.target.name === "tables_mode") syncTables();
  });
  document.addEventListener("htmx:afterSettle", syncTables);
  document.addEventListener("DOMContentLoaded", syncTables);

  // --- a visible loading state for every htmx request --------------------------------------------
  let inflight = 0;
  document.addEventListener("htmx:beforeRequest", (event) => {
    // Background polling of a request's status does not flash the page's progress bar.
    if (event.target.id === "request-live") return;
    inflight += 1;
    document.body.classList.add("htmx-busy");
  });
  document.addEventListener("htmx:afterRequest", (event) => {
    if (event.target.id === "request-live") return;
    inflight = Math.max(0, inflight - 1);
    if (!inflight) document.body.classList.remove("htmx-busy");
  });
  document.addEventListener("htmx:responseError", (event) => {
    const live = document.getElementById("preview");
    if (live && event.target === live) {
      live.innerHTML = '<div class="alert alert-danger py-2 small mb-0">The preview could not be computed (' +
        event.detail.xhr.status + "). Your input is kept; try again.</div>";
    }
  });
})();

// --- a table that scrolls inside its own box (phones, #19) is reachable with the keyboard ------
(function () {
  "use strict";
  function markScrollers() {
    document.querySelectorAll(".table-responsive").forEach((box) => {
      const scrolls = box.scrollWidth > box.clientWidth + 1;
      const focusable = box.querySelector("a, button, input, select, textarea, [tabindex]");
      if (scrolls && !focusable && !box.hasAttribute("tabindex")) {
        box.setAttribute("tabindex", "0");
        box.setAttribute("role", "region");
        const caption = box.querySelector("caption");
        box.setAttribute("aria-label", caption ? caption.innerText.trim() : "Table, scrolls sideways");
      }
    });
  }
  document.addEventListener("DOMContentLoaded", markScrollers);
  document.addEventListener("htmx:afterSettle", markScrollers);
  window.addEventListener("resize", markScrollers);
})();

// --- switches that save when flipped (review rules, #19) -----------------------------------------
document.addEventListener("change", (event) => {
  const box = event.target;
  if (!box.matches || !box.matches("input[data-autosubmit]")) return;
  const form = box.closest("form");
  if (form) form.requestSubmit ? form.requestSubmit() : form.submit();
});

// --- forms (#19): each field is judged by the server as the user leaves it; the error summary of a
// refused submit gets focus. The preview answer carries every field's problems (#preview-field-errors,
// the server's verdict, the same as at submit); only the fields the user has left show theirs.
(function () {
  "use strict";
  const touched = new Set();

  function showFieldErrors(name, messages) {
    const box = document.getElementById("field-" + name);
    if (!box) return;
    const errorId = "id_" + name + "_error";
    box.querySelectorAll(".invalid-feedback").forEach((old) => old.remove());
    box.querySelectorAll("input:not([type=hidden]), select, textarea").forEach((input) => {
      input.classList.toggle("is-invalid", messages.length > 0);
      if (messages.length) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid");
      const described = (input.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== errorId);
      if (messages.length) described.push(errorId);
      if (described.length) input.setAttribute("aria-describedby", described.join(" "));
      else input.removeAttribute("aria-describedby");
    });
    if (messages.length) {
      const feedback = document.createElement("div");
      feedback.className = "invalid-feedback d-block";
      feedback.id = errorId;
      feedback.textContent = messages.join(" ");
      box.appendChild(feedback);
    }
  }

  document.addEventListener("focusout", (event) => {
    const field = event.target;
    if (!field.name || !field.closest || !field.closest("#request-form") || field.type === "hidden") return;
    // Moving between the boxes of one group (privileges) is not leaving it.
    const next = event.relatedTarget;
    if (next && next.name === field.name) return;
    touched.add(field.name);
    document.body.dispatchEvent(new Event("fields-refreshed"));  // ask the server now, not after the debounce
  });

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.target.id !== "preview") return;
    const source = document.getElementById("preview-field-errors");
    if (!source) return;
    const errors = JSON.parse(source.textContent) || {};
    // htmx queues a request made while another is in flight: the older answer arrives first, judging
    // values the user has changed since. Show a field's verdict only when it is about what the field
    // holds now; the queued request's answer follows with the rest.
    const sent = event.detail.requestConfig && event.detail.requestConfig.unfilteredFormData;
    const form = document.getElementById("request-form");
    const now = form ? new FormData(form) : null;
    const same = (name) => !sent || !now || sent.getAll(name).join("\u0000") === now.getAll(name).join("\u0000");
    touched.forEach((name) => { if (same(name)) showFieldErrors(name, errors[name] || []); });
  });

  document.addEventListener("DOMContentLoaded", () => {
    const summary = document.getElementById("form-errors");
    if (summary) {
      summary.setAttribute("tabindex", "-1");
      summary.focus();
    }
  });
})();

// --- pickers (#19): a filter box above each long list of roles, schemas or tables; the team's own
// come first (grouped on the server, natural order). Multi-select lists are checkboxes: no Ctrl-click.
(function () {
  "use strict";
  function matches(text, term) { return text.toLowerCase().includes(term); }

  function addFilter(target, label, onInput) {
    const box = document.createElement("input");
    box.type = "search";
    box.className = "form-control form-control-sm mb-1 picker-filter";
    box.placeholder = "Type to filter";
    box.setAttribute("aria-label", "Filter " + label);
    box.setAttribute("aria-controls", target.id);
    box.autocomplete = "off";
    box.addEventListener("input", () => onInput(box.value.trim().toLowerCase()));
    // Enter in the filter must not submit the request form.
    box.addEventListener("keydown", (event) => { if (event.key === "Enter") event.preventDefault(); });
    target.parentNode.insertBefore(box, target);
  }

  function enhance() {
    document.querySelectorAll("select[data-searchable]:not([data-enhanced])").forEach((select) => {
      select.dataset.enhanced = "1";
      if (select.options.length < 8) return;  // a short list is quicker to read than to filter
      const label = select.labels && select.labels[0] ? select.labels[0].innerText.replace("*", "").trim() : select.name;
      addFilter(select, label, (term) => {
        Array.from(select.options).forEach((option) => {
          option.hidden = option.value !== "" && !option.selected && !matches(option.text, term);
        });
        select.querySelectorAll("optgroup").forEach((group) => {
          group.hidden = Array.from(group.children).every((option) => option.hidden);
        });
      });
    });
    document.querySelectorAll("[data-picker]:not([data-enhanced])").forEach((list) => {
      list.dataset.enhanced = "1";
      if (list.querySelectorAll(".form-check").length < 8) return;
      addFilter(list, list.dataset.picker, (term) => {
        list.querySelectorAll(".form-check").forEach((item) => {
          const input = item.querySelector("input");
          item.hidden = !matches(item.innerText, term) && !(input && input.checked);
        });
      });
    });
  }
  document.addEventListener("DOMContentLoaded", enhance);
  document.addEventListener("htmx:afterSettle", enhance);

  // The top bar's search suggests requests as you type (a datalist the server fills).
  document.addEventListener("DOMContentLoaded", () => {
    const search = document.getElementById("global-search");
    if (!search || !search.form) return;
    const list = document.createElement("datalist");
    list.id = "global-search-suggestions";
    search.after(list);
    search.setAttribute("list", list.id);
    let timer = null;
    let last = "";
    search.addEventListener("input", () => {
      clearTimeout(timer);
      const term = search.value.trim();
      if (term.length < 2 || term === last || term.startsWith("#") && list.querySelector(`option[value="${CSS.escape(term)}"]`)) return;
      timer = setTimeout(() => {
        last = term;
        const url = search.form.action + "?" + new URLSearchParams({ q: term, suggest: "1" });
        fetch(url, { headers: { "HX-Request": "true" }, credentials: "same-origin" })
          .then((answer) => (answer.ok ? answer.text() : ""))
          .then((html) => { list.innerHTML = html; });
      }, 250);
    });
  });
})();
