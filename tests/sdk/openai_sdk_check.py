"""Drives a running router with the official OpenAI Python SDK, changing
only the base URL and the API key. Exits non-zero on the first mismatch.

Usage: openai_sdk_check.py BASE_URL API_KEY CHAT_MODEL EMBEDDING_MODEL
"""

import sys

import openai
from openai import OpenAI


def check(condition, message):
    if not condition:
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    base_url, api_key, chat_model, embedding_model = sys.argv[1:5]
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

    models = [m.id for m in client.models.list()]
    check(chat_model in models and embedding_model in models, f"models listed: {models}")

    # A fresh question streams live from the provider.
    live = client.chat.completions.create(
        model=chat_model,
        messages=[{"role": "user", "content": "How long does standard delivery take?"}],
        stream=True,
    )
    live_text = "".join(c.choices[0].delta.content or "" for c in live if c.choices)
    check("three to five days" in live_text, f"live stream: {live_text!r}")

    question = [{"role": "user", "content": "Where do orders ship from?"}]
    completion = client.chat.completions.create(model=chat_model, messages=question)
    answer = completion.choices[0].message.content
    check("Lyon" in answer, f"answer: {answer!r}")
    check(completion.choices[0].finish_reason == "stop", "finish_reason")
    check(completion.usage is not None and completion.usage.total_tokens >= 0, "usage")

    pieces = []
    usage = None
    stream = client.chat.completions.create(
        model=chat_model,
        messages=question,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    check("".join(pieces) == answer, f"streamed {''.join(pieces)!r} vs {answer!r}")
    check(usage is not None, "no usage chunk in the stream")

    # The SDK asks for base64 and decodes it.
    embedded = client.embeddings.create(model=embedding_model, input=["refund policy", "shipping"])
    check(len(embedded.data) == 2, "two embeddings")
    check(len(embedded.data[0].embedding) == 384, "384 dimensions")
    floats = client.embeddings.create(
        model=embedding_model, input="refund policy", encoding_format="float"
    )
    a, b = embedded.data[0].embedding, floats.data[0].embedding
    check(max(abs(x - y) for x, y in zip(a, b)) < 1e-6, "base64 and float agree")

    try:
        client.chat.completions.create(model="no-such-model", messages=question)
        check(False, "an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.code == "model_not_found", f"error code {e.code}")

    bad = OpenAI(base_url=base_url, api_key="wrong-key", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong key was accepted")
    except openai.AuthenticationError:
        pass

    print("ok")


if __name__ == "__main__":
    main()
