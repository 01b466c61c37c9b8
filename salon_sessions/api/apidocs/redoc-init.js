// Starts ReDoc from a file (the docs' Content-Security-Policy allows no inline script).
// Its bundle comes from this server (the fastapi-offline package), never from a CDN.
"use strict";
(function () {
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, { hideDownloadButton: false }, root);
})();
