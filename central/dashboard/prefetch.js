// The overview's reads start before the charting library is parsed (a few hundred ms on a
// small box); app.js takes these promises for its first render.
window.__shilianPrefetch = (function () {
  if (location.hash.replace(/^#\/?/, "") !== "") return null;
  var scope = JSON.parse(document.getElementById("boot").textContent).scope;
  function get(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (b) {
        if (!r.ok) throw new Error(b.error ? b.error.message : r.statusText);
        return b;
      });
    });
  }
  return { code: scope, coverage: get(scope ? "/api/v1/coverage/" + scope : "/api/v1/coverage"),
    overview: get("/api/v1/dashboard/overview?code=" + scope) };
})();
