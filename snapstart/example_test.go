package snapstart_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/memload/memload/snapstart"
)

// Under SnapStart, load what the function needs during init, let go of
// idle connections before the snapshot, renew credentials after each
// restore, then start the invocation loop. Here a stand-in for Lambda's
// Runtime API answers restore/next at once, as if the snapshot had just
// been restored.
func Example() {
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("Runtime API:", r.Method, r.URL.Path)
	}))
	defer api.Close()
	os.Setenv("AWS_LAMBDA_RUNTIME_API", strings.TrimPrefix(api.URL, "http://")) // Lambda sets these
	os.Setenv(snapstart.InitTypeEnv, "snap-start")

	client := &http.Client{} // made during init, kept in the snapshot
	var hooks snapstart.Hooks
	hooks.BeforeSnapshot(func(context.Context) error {
		client.CloseIdleConnections() // a connection would not survive the snapshot
		fmt.Println("before snapshot: idle connections closed")
		return nil
	})
	hooks.AfterRestore(func(ctx context.Context) error {
		fmt.Println("after restore: fresh credentials") // e.g. awsconfig.LoadDefaultConfig(ctx)
		return nil
	})
	if err := hooks.Checkpoint(context.Background()); err != nil {
		log.Fatal(err) // reported to Lambda already: exit, and Lambda discards the environment
	}
	fmt.Println("serving") // lambda.Start(handler), lambdaurl.Start(handler)
	// Output:
	// before snapshot: idle connections closed
	// Runtime API: GET /2018-06-01/runtime/restore/next
	// after restore: fresh credentials
	// serving
}
