// Grafient dashboard: small progressive enhancements; every page works without them.
"use strict";
(function () {
  document.documentElement.classList.add("js");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  // Filters apply as soon as they change.
  document.querySelectorAll(".autosubmit").forEach((el) =>
    el.addEventListener("change", () => el.form.submit()));

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    return response.json();
  }

  // Add Integration: Test Connection shows a green check with the organization, or the error.
  const testButton = document.getElementById("test-key");
  if (testButton) {
    testButton.hidden = false;
    const result = document.getElementById("test-result");
    const keyField = document.getElementById("key");
    testButton.addEventListener("click", async () => {
      result.className = "test-result";
      result.textContent = "Testing the connection…";
      testButton.disabled = true;
      try {
        const answer = await post("/api/test-key", {
          provider: document.getElementById("provider").value, key: keyField.value });
        result.className = "test-result " + (answer.ok ? "good" : "bad");
        result.textContent = (answer.ok ? "✓ " : "✗ ") + answer.message;
      } catch (error) {
        result.className = "test-result bad";
        result.textContent = "✗ The dashboard did not answer; is it still running?";
      } finally {
        testButton.disabled = false;
      }
    });
    const providerField = document.getElementById("provider");
    providerField.addEventListener("change", () => {
      const prefix = providerField.selectedOptions[0].dataset.keyPrefix;
      keyField.placeholder = prefix + "…";
    });
    document.getElementById("add-form").addEventListener("submit", () => {
      document.getElementById("add-button").disabled = true;
    });
  }

  // Integration cards with a running job: poll its state, reload when it ends.
  const busy = document.querySelectorAll("[data-busy]");
  if (busy.length) {
    const poll = async () => {
      let running = false;
      try {
        const response = await fetch("/api/jobs", { headers: { Accept: "application/json" } });
        const jobs = await response.json();
        busy.forEach((card) => {
          const mine = jobs.filter((j) => j.integration_id === card.dataset.integration).pop();
          if (!mine) return;
          if (mine.state === "queued" || mine.state === "running") {
            running = true;
            const state = card.querySelector('[data-role="job-state"]');
            const line = card.querySelector('[data-role="job-line"]');
            if (state) state.textContent = mine.kind.charAt(0).toUpperCase() + mine.kind.slice(1) +
              " " + mine.state + " · " + Math.round(mine.elapsed_s) + " s";
            if (line) line.textContent = mine.last_line || "starting";
          }
        });
      } catch (error) { running = true; }
      if (running) setTimeout(poll, 1000); else window.location.reload();
    };
    setTimeout(poll, 1000);
  }
})();
