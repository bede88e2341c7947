"""HTTP routes: Orthanc-compatible public jobs API, the service's own routes, the plugin's internal API."""
