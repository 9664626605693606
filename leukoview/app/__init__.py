"""Floor 4, the app layer: what the pages, the API and the CLI call (Streamlit only in the ui modules)."""
