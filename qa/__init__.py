"""Question answering over news archives: every answer sentence cited to its article."""
from qa.answer import Answer, Assistant, Citation, Policy, answer
from qa.retrieve import Hit, Passage, Retriever

__all__ = ["Answer", "Assistant", "Citation", "Hit", "Passage", "Policy", "Retriever", "answer"]
