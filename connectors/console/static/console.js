// meterline console: the one script. Pages work without it; it only refreshes the
// elements marked data-live (their server-rendered HTML, fetched again) on a timer.
"use strict";
(function () {
  for (const element of document.querySelectorAll("[data-live]")) {
    const every = Number(element.dataset.every || 2000);
    const refresh = async () => {
      try {
        const answer = await fetch(element.dataset.live, { credentials: "same-origin" });
        if (answer.redirected || !answer.ok) return; // logged out or failing: keep what we show
        element.innerHTML = await answer.text();
      } catch (error) {
        // the edge is restarting: try again at the next tick
      }
    };
    setInterval(refresh, every);
  }
})();
