"""One definition of a call to a model: the OpenAI paths the panel forwards, SSE framing and parsing (StreamChunk),
the tokens/s, TTFT and TPOT figures of a streamed answer (stats), the tap that observes an engine's reply, and the
gateway (route → forward → tap) that chat, the API, benchmarks and evaluations all go through."""
