// convoforge review: labels by mouse or keyboard, sent the moment they are made.
(function () {
  "use strict";
  const token = document.querySelector('meta[name="review-token"]').content;
  const keys = {
    pair: {"1": "chosen_better", "2": "rejected_better", "3": "tie", "4": "both_bad"},
    row: {"a": "keep", "x": "drop"},
  };

  function toast(text, bad) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = bad ? "show bad" : "show";
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.className = ""; }, 2500);
  }

  async function label(item, value) {
    const note = item.querySelector(".note");
    const body = {target: item.dataset.target, row_id: item.dataset.id, label: value, note: note ? note.value : ""};
    try {
      const response = await fetch("/api/labels", {
        method: "POST", headers: {"Content-Type": "application/json", "X-Review-Token": token},
        body: JSON.stringify(body), credentials: "same-origin",
      });
      const answer = await response.json();
      if (!response.ok) { toast("not saved: " + answer.error, true); return; }
      item.dataset.label = value;
      item.querySelector(".current").textContent = value;
      toast("saved: " + value);
    } catch (error) {
      toast("not saved: " + error, true);
    }
  }

  function items() { return Array.from(document.querySelectorAll(".item[data-target]")); }

  function focusItem(k) {
    const all = items();
    if (!all.length) return;
    const item = all[Math.max(0, Math.min(all.length - 1, k))];
    all.forEach((el) => el.classList.remove("focus"));
    item.classList.add("focus");
    item.focus({preventScroll: true});
    item.scrollIntoView({block: "nearest"});
  }

  function current() {
    const all = items();
    return Math.max(0, all.findIndex((el) => el.classList.contains("focus")));
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest(".labels button[data-label]");
    if (!button) return;
    const item = button.closest(".item");
    focusItem(items().indexOf(item));
    label(item, button.dataset.label);
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const all = items();
    if (!all.length) return;
    if (event.key === "j") { focusItem(current() + 1); event.preventDefault(); return; }
    if (event.key === "k") { focusItem(current() - 1); event.preventDefault(); return; }
    const item = all[current()];
    const value = (keys[item.dataset.target] || {})[event.key];
    if (value) { event.preventDefault(); focusItem(current()); label(item, value); }
  });

  document.addEventListener("DOMContentLoaded", () => focusItem(0));
})();
