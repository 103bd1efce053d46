"""HTTP plumbing shared by the routes: the JSON envelope and API errors."""
