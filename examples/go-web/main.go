// A Go web server with a module dependency (github.com/google/uuid), built by
// the go buildpack with the Go toolchain go.mod asks for.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"

	"github.com/google/uuid"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "5000"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<h1>Go on Slipway</h1><p>%s, request %s, dyno %s</p>\n",
			runtime.Version(), uuid.NewString(), os.Getenv("DYNO"))
	})
	log.Printf("listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}
