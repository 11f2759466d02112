"""Report: the HTML report's figures, tables and page."""
