"""Question answering over news archives: every answer sentence cited to its article."""
from qa.answer import Answer, Citation, Policy
from qa.retrieve import Hit, Passage, Retriever

__all__ = ["Answer", "Citation", "Hit", "Passage", "Policy", "Retriever"]
