"""A synthetic generative (LLM) model with known timings: a continuous-batching simulation served over the
OpenAI-compatible routes (server/http/openai.py). See docs/generative.md "Reference server"."""
