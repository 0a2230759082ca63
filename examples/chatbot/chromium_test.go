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

// TestChatPage drives the chat page in a real headless Chromium: type a
// prompt, send it, and watch the streamed answer arrive in pieces.
func TestChatPage(t *testing.T) {
	chromium := tool(t, "chromium", "apt-get install -y chromium")
	ts := newTestServer(t, testConfig(t, map[string]string{"MAX_TOKENS": "24"}))

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx); err != nil { // starts the browser, for the context's lifetime
		t.Fatal(err)
	}
	tctx, cancelTimeout := context.WithTimeout(ctx, time.Minute)
	defer cancelTimeout()
	var err error
	for i, a := range []chromedp.Action[chromedp.Void]{
		chromedp.Navigate(ts.url + "/"),
		// The header shows the model's state, from /healthz.
		chromedp.WaitVisible(`body[data-model="ready"]`),
		chromedp.SendKeys(`#prompt`, "Tell me a story"),
		chromedp.Click(`#send`),
		chromedp.WaitVisible(`body[data-state="done"], body[data-state="error"]`),
	} {
		if err = chromedp.Do(tctx, a); err != nil {
			err = fmt.Errorf("step %d: %w", i, err)
			break
		}
	}
	if err != nil {
		html, _ := chromedp.Run(ctx, chromedp.OuterHTML("html"))
		t.Fatalf("%v; the page:\n%s", err, html)
	}
	text := func(sel string) string {
		v, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	attr := func(sel, name string) string {
		v, err := chromedp.Run(ctx, chromedp.AttributeValue(sel, name))
		if err != nil {
			t.Fatalf("%s of %s: %v", name, sel, err)
		}
		return v.Value
	}
	state, chunks := attr(`body`, "data-state"), attr(`.msg.assistant`, "data-chunks")
	status, answer, stats := text(`#status`), text(`.msg.assistant`), text(`.stats`)
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
	if testing.Verbose() {
		t.Logf("status %q\nanswer (%s chunks) %q\nstats %q", status, chunks, answer, stats)
	}
}
