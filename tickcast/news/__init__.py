"""The news pipeline: news items from feeds, scored for sentiment per symbol.

:mod:`tickcast.news.items` holds the record every part of it shares
(:class:`~tickcast.news.items.NewsItem`); the table it is stored in is ``news`` in
:mod:`tickcast.stores.tables`.
"""
