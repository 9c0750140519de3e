"""Which configured symbols a news item is about.

Contract (:class:`SymbolMapper`):

* An item's own currency codes (a feed's tags, CryptoPanic's ``currencies``, the
  replay field ``currencies``) decide when present: each code, after aliases
  (``XBT`` -> ``BTC``), selects the configured symbols with that base asset
  (``BTC`` -> ``BTC/USD``, ``BTC/EUR``). Codes of unconfigured assets are ignored.
* Otherwise the text (title, then summary) is searched, on word boundaries:
  - **names** match in any case (``Bitcoin``, ``bitcoin``, ``Ethereum``, ``Ether``);
  - **tickers** match only in upper case, alone or as ``$TICKER`` (``SOL`` yes,
    ``Sol``/``solution`` no) — except in a headline written all in capitals, where a
    ticker that is also an English word (``LINK``, ``DOT``, ``ONE``, …) counts only
    with its ``$``.
* An item that maps to no configured symbol is not stored; the flow counts it
  (``unmapped``) — it is not a dead letter: it is valid news about something else.

>>> m = SymbolMapper(("BTC/USD", "ETH/USD", "SOL/USD"))
>>> m.map(["XBT"], "")
('BTC/USD',)
>>> m.map(None, "Ether rallies while bitcoin stalls")
('BTC/USD', 'ETH/USD')
>>> m.map(None, "A new solution for SOL holders")
('SOL/USD',)
>>> m.map(None, "Sol is the sun")
()
>>> m.map(["DOGE"], "Bitcoin")  # codes present: the text is not searched
()
>>> m.map(None, "Bitcoin Cash forks again"), m.map(None, "BITCOIN HITS $100K AS LINK AND $SOL FLY")
((), ('BTC/USD', 'SOL/USD'))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# Base-asset aliases: every spelling -> the code Kraken v2 symbols use. Names are
# matched case-insensitively, codes in upper case only.
ALIASES: dict[str, tuple[str, ...]] = {
    "BTC": ("XBT", "Bitcoin", "Bitcoins"),
    "ETH": ("Ethereum", "Ether"),
    "SOL": ("Solana",),
    "XRP": ("Ripple",),
    "DOGE": ("XDG", "Dogecoin"),
    "ADA": ("Cardano",),
    "LTC": ("Litecoin",),
    "DOT": ("Polkadot",),
    "LINK": ("Chainlink",),
    "AVAX": ("Avalanche",),
    "XLM": ("Stellar", "Lumens"),
    "XMR": ("Monero",),
    "BCH": ("Bitcoin Cash",),
    "USDT": ("Tether",),
    "USDC": ("USD Coin",),
    "TRX": ("Tron",),
    "ATOM": ("Cosmos",),
    "UNI": ("Uniswap",),
    "MATIC": ("Polygon",),
}
# tickers that are also English words: in an all-caps headline only "$TICKER" counts
WORD_TICKERS = frozenset({"LINK", "DOT", "ONE", "UNI", "NEAR", "ATOM", "SOL", "GAS", "OP", "ICP", "FLOW",
                          "GRT", "SAND", "MANA", "IMX", "APE", "CAKE", "GALA", "ROSE", "CHZ", "ENS"})


def base_of(symbol: str) -> str:
    """``BTC/USD`` -> ``BTC`` (XBT normalised to BTC)."""
    base = symbol.split("/", 1)[0].upper()
    return "BTC" if base == "XBT" else base


class SymbolMapper:
    """Maps currency codes or text to the configured symbols (see the module docstring)."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self._by_base: dict[str, tuple[str, ...]] = {}
        for s in self.symbols:
            b = base_of(s)
            self._by_base[b] = tuple(sorted({*self._by_base.get(b, ()), s}))
        self._code: dict[str, str] = {}  # any code spelling -> base
        names: dict[str, str] = {}  # lower-case name -> base
        # every known asset's spellings, configured or not: "Bitcoin Cash" must be BCH
        # (and then ignored when BCH is not configured), never "Bitcoin" + noise
        for base in {*ALIASES, *self._by_base}:
            self._code[base] = base
            for alias in ALIASES.get(base, ()):
                if alias.isupper() and " " not in alias:
                    self._code[alias] = base
                else:
                    names[alias.lower()] = base
        # a name inside a longer one ("Bitcoin" in "Bitcoin Cash") must not win: longest first
        name_alts = sorted(names, key=len, reverse=True)
        self._names = names
        self._name_re = (re.compile(r"(?<![\w$])(" + "|".join(map(re.escape, name_alts)) + r")(?![\w])",
                                    re.IGNORECASE) if name_alts else None)
        codes = sorted(self._code, key=len, reverse=True)
        self._ticker_re = (re.compile(r"(?<![\w])(\$?)(" + "|".join(map(re.escape, codes)) + r")(?![\w])")
                           if codes else None)

    def from_codes(self, codes: Iterable[str]) -> tuple[str, ...]:
        out: set[str] = set()
        for c in codes:
            base = self._code.get(str(c).strip().upper())
            if base is not None:
                out.update(self._by_base.get(base, ()))
        return tuple(sorted(out))

    def from_text(self, *texts: str) -> tuple[str, ...]:
        bases: set[str] = set()
        for text in texts:
            if not text:
                continue
            if self._name_re is not None:
                for m in self._name_re.finditer(text):
                    bases.add(self._names[m.group(1).lower()])
            if self._ticker_re is not None:
                letters = [ch for ch in text if ch.isalpha()]
                shouting = len(letters) >= 8 and sum(ch.isupper() for ch in letters) > 0.8 * len(letters)
                for m in self._ticker_re.finditer(text):
                    dollar, code = m.group(1), m.group(2)
                    if shouting and not dollar and code in WORD_TICKERS:
                        continue
                    bases.add(self._code[code])
        out: set[str] = set()
        for b in bases:
            out.update(self._by_base.get(b, ()))
        return tuple(sorted(out))

    def map(self, codes: Iterable[str] | None, *texts: str) -> tuple[str, ...]:
        """The configured symbols an item is about (sorted; empty = none)."""
        if codes:
            return self.from_codes(codes)
        return self.from_text(*texts)
