// The API's documentation page: Swagger UI rendering the service's own /openapi.json.
// A file of its own, not an inline script: the page's Content-Security-Policy allows
// scripts of the service only. Relative URLs, so the page works behind a path prefix.
"use strict";
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // a request tried from the page goes to the service that served it
  tryItOutEnabled: false,
});
