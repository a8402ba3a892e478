"""Tables in the paper's layout, plots and the Markdown report."""
