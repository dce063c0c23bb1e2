"""What a figure tells its reader, and the check every figure of the project passes."""


def described(figure):
    """Per axes: ``(title, xlabel, ylabel, [(series label, number of points)...], [legend texts])``,
    a series being a line or a set of bars."""
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(),
             [(line.get_label(), len(line.get_xdata())) for line in ax.get_lines()]
             + [(bars.get_label(), len(bars)) for bars in ax.containers],
             [text.get_text() for text in ax.get_legend().get_texts()] if ax.get_legend() else [])
            for ax in figure.axes]


def assert_says_what_it_shows(name, axes):
    """Each of ``axes`` (from ``described``) has a title and both axis labels, in words rather than
    identifiers, and a legend that names every labelled series (or no labelled series at all)."""
    for title, xlabel, ylabel, series, legend in axes:
        assert title and xlabel and ylabel and "_" not in title + ylabel, (name, title, ylabel)
        named = [label for label, _ in series if not label.startswith("_")]
        assert legend == named or not named, (name, legend, named)
