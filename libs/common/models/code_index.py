"""Tables owned by code_search: indexed repositories and files (the search index itself lives on
the code_search service's local disk)."""
