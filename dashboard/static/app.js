// Troupe dashboard: live updates from server-sent events, keyboard
// shortcuts on the review page, and selecting many dead letters. No
// framework, nothing loaded from elsewhere.
"use strict";

(function () {
  const status = document.getElementById("live-status");
  let pending = null;
  let refreshes = 0;

  // refresh fetches this page again and swaps every element marked
  // data-live, unless the reader is typing inside it.
  async function refresh() {
    pending = null;
    try {
      const res = await fetch(location.href, { headers: { "X-Troupe-Live": "1" }, credentials: "same-origin" });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      document.querySelectorAll("[data-live][id]").forEach((el) => {
        if (el.contains(document.activeElement) && document.activeElement !== document.body) return;
        const fresh = doc.getElementById(el.id);
        if (fresh) el.replaceWith(document.importNode(fresh, true));
      });
      refreshes++;
      document.body.dataset.refreshes = String(refreshes);
    } catch (e) {
      // the next event tries again
    }
  }

  function schedule() {
    if (!pending) pending = setTimeout(refresh, 250);
  }

  // A page whose live part asks for it is refreshed on a timer instead
  // (the workers page: each refresh pings every worker); a job's page only
  // for its own job's events.
  const every = document.querySelector("[data-live][data-every]");
  const only = document.querySelector("[data-live][data-job]");
  if (every) {
    setInterval(refresh, Number(every.dataset.every));
  } else if (document.querySelector("[data-live]") && window.EventSource) {
    const es = new EventSource("/events");
    status.hidden = false;
    es.onopen = () => { status.className = "live-on"; document.body.dataset.live = "on"; };
    es.onerror = () => { status.className = "live-off"; document.body.dataset.live = "off"; };
    es.addEventListener("job", (e) => {
      if (only) {
        try {
          if (JSON.parse(e.data).job_id !== only.dataset.job) return;
        } catch (_) {
          // not an event this page knows: refresh anyway
        }
      }
      schedule();
    });
  }

  // Keyboard shortcuts: a approve, r reject, n next.
  function typing(e) {
    const t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey && e.key === "Enter" && e.target.id === "feedback") {
      e.preventDefault();
      document.getElementById("reject")?.click();
      return;
    }
    if (typing(e) || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "a") {
      document.getElementById("approve")?.click();
    } else if (e.key === "r") {
      const fb = document.getElementById("feedback");
      if (!fb) return;
      e.preventDefault();
      if (fb.value.trim() === "") {
        fb.focus();
        fb.placeholder = "Why is it rejected? Then press Ctrl+Enter.";
      } else {
        document.getElementById("reject")?.click();
      }
    } else if (e.key === "n" || e.key === "j") {
      const next = document.querySelector("[data-next]");
      if (next) location.href = next.getAttribute("href");
    }
  });

  // A rejection needs feedback: say so before the round trip.
  const reject = document.getElementById("reject");
  if (reject) {
    reject.addEventListener("click", (e) => {
      const fb = document.getElementById("feedback");
      if (fb && fb.value.trim() === "") {
        e.preventDefault();
        fb.focus();
        fb.setCustomValidity("Feedback is required to reject: the next revision gets it.");
        fb.reportValidity();
        fb.addEventListener("input", () => fb.setCustomValidity(""), { once: true });
      }
    });
  }

  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll('#dead-letters input[name="id"]').forEach((c) => { c.checked = all.checked; });
    });
  }
})();
