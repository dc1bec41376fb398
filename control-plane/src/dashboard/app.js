// Fetches the server-rendered panel again every two seconds. When the
// session has ended it goes back to the login form; when the control plane
// cannot be reached it keeps the last panel and says so.
(function () {
  "use strict";
  var panel = document.getElementById("panel");
  async function refresh() {
    try {
      var response = await fetch("/dashboard/panel", {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) {
        window.location.assign("/dashboard/login");
        return;
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      panel.innerHTML = await response.text();
      document.body.classList.remove("stale");
    } catch (e) {
      document.body.classList.add("stale");
    }
  }
  setInterval(refresh, 2000);
})();
