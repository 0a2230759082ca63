package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browser starts a headless Chromium for the test and returns its context.
func browser(t *testing.T) context.Context {
	t.Helper()
	chromium := tool(t, "chromium", "apt-get install -y chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(600, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // starts the browser, for the context's lifetime
		t.Fatal(err)
	}
	return ctx
}

// steps runs the actions, failing the test with the page's HTML if one
// fails.
func steps(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i, a := range actions {
		if err := chromedp.Do(tctx, a); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML("html"))
			t.Fatalf("step %d: %v; the page:\n%s", i, err, html)
		}
	}
}

func pageText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return v
}

func pageAttr(t *testing.T, ctx context.Context, sel, name string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.AttributeValue(sel, name))
	if err != nil {
		t.Fatalf("%s of %s: %v", name, sel, err)
	}
	return v.Value
}

func pageEval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

// TestChatPage drives the chat page in a real headless Chromium: type a
// prompt, send it, and watch the streamed answer arrive in pieces.
func TestChatPage(t *testing.T) {
	ctx := browser(t)
	ts := newTestServer(t, testConfig(t, map[string]string{"MAX_TOKENS": "24"}))
	// A word longer than the page is wide must wrap, not overflow.
	long := strings.Repeat("x", 300)
	steps(t, ctx,
		chromedp.Navigate(ts.url+"/"),
		// The header shows the model's state, from /healthz.
		chromedp.WaitVisible(`body[data-model="ready"]`),
		chromedp.SendKeys(`#prompt`, "Tell me a story "+long),
		chromedp.Click(`#send`),
		chromedp.WaitVisible(`body[data-state="done"], body[data-state="error"]`),
	)
	state, chunks := pageAttr(t, ctx, `body`, "data-state"), pageAttr(t, ctx, `.msg.assistant`, "data-chunks")
	status, answer, stats := pageText(t, ctx, `#status`), pageText(t, ctx, `.msg.assistant`), pageText(t, ctx, `.stats`)
	n, _ := strconv.Atoi(chunks)
	if state != "done" || strings.TrimSpace(answer) == "" || n < 2 {
		t.Errorf("page state %q, %s chunks, answer %q", state, chunks, answer)
	}
	// The page sent the conversation to the API as one streamed request,
	// and shows the token count the server logged for it (sampling is
	// random, so the count is whatever the model generated: it may end
	// its turn before max_tokens).
	recs := ts.logs.find("chat")
	if len(recs) != 1 || recs[0]["stream"] != true {
		t.Fatalf("chat log lines %v", recs)
	}
	generated, _ := recs[0]["generated_tokens"].(float64)
	if generated < 1 {
		t.Errorf("the server generated %v tokens", recs[0]["generated_tokens"])
	}
	want := fmt.Sprintf("%d tokens ·", int(generated))
	if !strings.Contains(status, "tiny-qwen2.gguf: ready") || !strings.HasPrefix(stats, want) || !strings.Contains(stats, "tokens/s") {
		t.Errorf("status %q, stats %q: want stats starting %q", status, stats, want)
	}
	if overflow := pageEval[bool](t, ctx, `[...document.querySelectorAll(".msg")].some(m => m.scrollWidth > m.clientWidth) || document.documentElement.scrollWidth > document.documentElement.clientWidth`); overflow {
		t.Error("a message overflows the page: long words do not wrap")
	}
	if pageEval[bool](t, ctx, `!document.getElementById("apikey").hidden`) {
		t.Error("the API key field shows, but the server wants no key")
	}
	if testing.Verbose() {
		t.Logf("status %q\nanswer (%s chunks) %q\nstats %q", status, chunks, answer, stats)
	}
}

// TestChatPageThinking: with a thinking model behind an API key, the page
// asks for the key, and shows the reasoning collapsed above the answer.
func TestChatPageThinking(t *testing.T) {
	ctx := browser(t)
	ts := newTestServer(t, testConfig(t, map[string]string{"CHAT_TEMPLATE": "deepseek-r1", "MAX_TOKENS": "16"}))
	ts.apiKey = testKey
	steps(t, ctx,
		chromedp.Navigate(ts.url+"/"),
		chromedp.WaitReady(`#apikey:not([hidden])`),
	)
	// (chromedp's typing waits for the field forever once it was hidden.)
	pageEval[string](t, ctx, `document.getElementById("apikey").value = "`+testKey+`"`)
	steps(t, ctx,
		chromedp.SendKeys(`#prompt`, "Why?"),
		chromedp.Click(`#send`),
		chromedp.WaitVisible(`body[data-state="done"], body[data-state="error"]`),
	)
	if state := pageAttr(t, ctx, `body`, "data-state"); state != "done" {
		t.Fatalf("state %q: %s", state, pageText(t, ctx, `.msg.assistant`))
	}
	// The random tokens never close the reasoning: it is all thinking.
	open := pageEval[bool](t, ctx, `document.querySelector(".msg.assistant details.thinking").open`)
	thought := pageEval[string](t, ctx, `document.querySelector(".msg.assistant details.thinking div").textContent`)
	visible := pageText(t, ctx, `.msg.assistant`)
	if open || strings.TrimSpace(thought) == "" || strings.TrimSpace(visible) != "Thinking" {
		t.Errorf("thinking open %v, text %q; visible %q: want it collapsed under its summary", open, thought, visible)
	}
	if recs := ts.logs.find("chat"); len(recs) != 1 {
		t.Errorf("chat log lines %v", recs)
	}
}
