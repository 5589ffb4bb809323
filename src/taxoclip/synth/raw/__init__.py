"""SynthToL raw-source mode: the same organisms as a GBIF-like source, with real data's faults.

Layout under ``OUT/raw/``::

    dwca/meta.xml                  Darwin Core Archive (directory form): core Occurrence,
    dwca/occurrence.txt            extension Multimedia, tab-separated UTF-8, joined on gbifID
    dwca/multimedia.txt            identifier = image path relative to dwca/
    dwca/media/0000000.jpg …
    backbone/Taxon.tsv             an offline backbone in GBIF's format, with synonyms and
    backbone/VernacularName.tsv    homonyms across kingdoms
    backbone/VERSION
    truth.csv                      one row per multimedia row: faults and expected outcome
    raw.json                       counts, rates, config

Every training image of a seen species becomes one record (an occurrence with one media
row; a few occurrences have two). Name faults and unusual image modes are applied to some
of them and must survive curation. Junk (duplicates, corrupt, tiny, bomb, label, leaked,
unresolvable) comes as extra records that curation must reject at the stage truth.csv
names. Every record carries at most one fault.

Modules, in the order data flows: ``spec`` (faults, rates, expected outcomes), ``backbone``
(Taxon.tsv and friends), ``misnames`` (name faults), ``occurrences`` (which record gets which
fault), ``images`` (image faults), ``dwca`` (the archive and truth rows), ``source``
(``write_raw_source``, which ``taxoclip.synth.dataset`` calls). None of them imports
``dataset``: the raw source is written from what the dataset writer hands it.
"""

from .source import write_raw_source

__all__ = ["write_raw_source"]
