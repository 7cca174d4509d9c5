package nixeval

import (
	"fmt"
	"regexp"
	"strings"
)

// FetchFailurePatterns say that an evaluation failed fetching something (a
// flake, an input, nixpkgs), not because of the file: the network, DNS, a
// server, or missing or refused credentials. Such a failure fails the
// builder step instead of becoming a result, so BuildKit caches nothing and
// the same build works once the network or a --secret is there. They are
// extended regular expressions, matched ignoring case, that Go's regexp and
// grep -E read alike: run.sh greps the log with them (the file
// FetchFailuresFile of the invocation). testdata/logs/fetch holds logs of
// real failures they must match.
var FetchFailurePatterns = []string{
	`unable to download`,
	`could not resolve host`,
	`couldn't resolve host`,
	`temporary failure in name resolution`,
	`failed to connect`,
	`could not connect to server`,
	`connection (refused|reset|timed out)`,
	`timeout was reached`,
	`network is unreachable`,
	`unable to access '`,
	`ssl connect error`,
	`HTTP error (401|403|407|429|5[0-9][0-9])`,
	`could not read (username|password)`,
	`permission denied \(publickey`,
	`could not read from remote repository`,
	`host key verification failed`,
	`authentication (failed|required)`,
	`failed to fetch git repository`,
}

// The invocation files run.sh reads on an evaluation failure.
const (
	FetchFailuresFile = "fetch-failures"     // FetchFailurePatterns, one a line
	FetchHintFile     = "fetch-failure-hint" // FetchHint
)

var fetchFailureRe = regexp.MustCompile(`(?i)` + strings.Join(FetchFailurePatterns, "|"))

// FetchFailure says whether the log of a failed evaluation is a fetch failure.
func FetchFailure(log string) bool {
	return fetchFailureRe.MatchString(ansiRe.ReplaceAllString(log, ""))
}

// FetchHint is what the failed step says after a fetch failure: why it
// fails, and the secrets that carry credentials.
func FetchHint() string {
	var b strings.Builder
	b.WriteString("nixos2docker: evaluation failed while fetching (see above), not because of the file: the step fails so that nothing is cached, and the same build can work once the network is back or the credentials are given.\n")
	b.WriteString("nixos2docker: if a flake, an input or a binary cache needs credentials, pass them as BuildKit secrets (docker buildx build --secret id=ID,src=FILE):\n")
	for _, s := range Secrets {
		fmt.Fprintf(&b, "nixos2docker:   %s: %s\n", s.ID, s.What)
	}
	return b.String()
}
