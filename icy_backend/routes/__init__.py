"""Route modules; each exports ``routes: list[BaseRoute]``. The app factory mounts them."""
