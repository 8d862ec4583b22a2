"""The Feast feature repo: the schema every other part of streamrec reads or writes."""
