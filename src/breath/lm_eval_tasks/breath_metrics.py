"""``process_results`` of the breath lm-evaluation-harness tasks (copied next to each task's yaml,
where lm_eval's ``!function`` looks for it; it imports nothing from breath).

A document's row carries the counts its log-likelihood is normalised by, computed at export with
the run's own tokenizer: ``tokens`` (the tokens ``loglikelihood_rolling`` predicts, so
``token_perplexity`` = exp(−Σ log p / Σ tokens) is ``breath eval``'s perplexity), and ``words`` and
``bytes`` of the documents' text (the ``<|endoftext|>`` separators are predicted but count as
neither), for lm_eval's usual ``word_perplexity``, ``byte_perplexity`` and ``bits_per_byte``.
"""


def process_results(doc, results):
    (loglikelihood,) = results
    return {
        "token_perplexity": (loglikelihood, doc["tokens"]),
        "word_perplexity": (loglikelihood, doc["words"]),
        "byte_perplexity": (loglikelihood, doc["bytes"]),
        "bits_per_byte": (loglikelihood, doc["bytes"]),
    }
