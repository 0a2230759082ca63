// Package openai serves OpenAI's chat completions API over an llm model:
// the request parsing, the answers (JSON, or server-sent events with
// "stream": true), a thinking model's reasoning as reasoning_content, tool
// calls in each template family's format streamed as OpenAI streams them,
// grammars that make the model's calls and structured output match their
// JSON schemas, log probabilities, and OpenAI's error shape.
//
// A [Handler] is an http.Handler for /v1/; a Lambda function serves it
// with lambdaurl, a server with net/http. It answers one model, which
// [Handler.Model] returns (after waiting for its load, if need be).
//
// # Request fields
//
// Honoured: messages (system, developer, user, assistant with tool_calls,
// tool with tool_call_id; text content or text parts), stream,
// stream_options.include_usage, max_tokens, max_completion_tokens,
// temperature, top_p, seed, stop, n (1 only), frequency_penalty,
// presence_penalty, logit_bias, response_format (text, json_object,
// json_schema), logprobs, top_logprobs, tools (function tools),
// tool_choice (none, auto, required, a named function), parallel_tool_calls,
// and llama.cpp's top_k, min_p and reasoning_format (deepseek, auto, none).
// Ranges are the model's to check: llm.ErrBadOption is a 400 naming the
// request's field.
//
// Ignored, since they cannot change the answer: model, user, metadata,
// store, service_tier, safety_identifier, prompt_cache_key,
// prompt_cache_retention, prompt_cache_options, prediction,
// stream_options.include_obfuscation, json_schema.strict (always strict),
// and copied-back message fields (name, refusal, parsed, annotations,
// reasoning_content).
//
// Refused with a 400 naming them: audio and non-text modalities or content
// parts, reasoning_effort, verbosity, web_search_options, moderation, the
// deprecated functions and function_call, custom tools, a JSON schema
// keyword the converter cannot enforce, and any field not in the API.
//
// # Tools
//
// Calls are parsed in the format of the model's template family
// ([Model.Template]): Hermes and Qwen's <tool_call>{...}</tool_call>
// (chatml, hermes*, qwen*), Llama 3.x's {"name": ..., "parameters": ...}
// with or without <|python_tag|> (llama3*), Mistral's [TOOL_CALLS][...]
// and [TOOL_CALLS]name[ARGS]{...} (mistral*), and DeepSeek's tool tokens
// (deepseek*). Other families get a 400 when they send tools. With
// [Handler.Grammars] set, the calls are grammar-constrained to the tools'
// schemas: from the first token for tool_choice "required" or a named
// function (after the reasoning of a thinking model), lazily from the
// family's trigger for "auto".
package openai
