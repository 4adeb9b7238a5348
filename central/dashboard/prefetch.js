// The overview's reads start before the charting library is parsed (a few hundred ms on a
// small box); app.js takes these promises for its first render.
window.__shilianPrefetch = (function () {
  if (location.hash.replace(/^#\/?/, "") !== "") return null;
  var scope = BOOT.scope;
  return { code: scope, coverage: api(scope ? "/api/v1/coverage/" + scope : "/api/v1/coverage"),
    overview: api("/api/v1/dashboard/overview?code=" + scope) };
})();
