"""The sweep engine: step load through user counts, measure each window, say what gives out first."""
