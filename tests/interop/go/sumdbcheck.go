// Command sumdbcheck runs EdgeLedger's notes, checkpoints and Merkle proofs through
// Go's golang.org/x/mod/sumdb/note and sumdb/tlog: code nobody on the project wrote.
//
// It reads one JSON request on stdin and writes one JSON response on stdout:
//
//	request:  {"stores": {"<name>": ["<base64 hash>", ...]},  // hashes at tlog stored indexes
//	           "cases":  [{"id": "...", "op": "...", ...}, ...]}
//	response: {"results": [{"id": "...", "ok": true|false, "error": "...", ...}, ...]}
//
// One result per case, in order. "ok" false means Go refused the input; "error" is
// Go's own error text. Hashes and keys are standard base64. Operations:
//
//	open           note, vkeys           note.NewVerifier + note.Open; with "checkpoint": true
//	                                     the text is also parsed as a tlog checkpoint
//	check_record   proof, size, root, index, leaf    tlog.CheckRecord
//	check_tree     proof, size, root, old_size, old_root   tlog.CheckTree
//	tree_hash      store, size           tlog.TreeHash over the named store
//	prove_record   store, size, index    tlog.ProveRecord over the named store
//	prove_tree     store, size, old_size tlog.ProveTree over the named store
//	stored_hashes  leaves                tlog.StoredHashesForRecordHash, appended in order
//	stored_index   pairs [[level, n]]    tlog.StoredHashIndex
//	sign           skey, text            note.NewSigner + note.Sign
//	generate       name                  note.GenerateKey
//
// Build in GOPATH mode against Debian's golang-golang-x-mod-dev:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o sumdbcheck sumdbcheck.go
package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type request struct {
	Stores map[string][]string `json:"stores"`
	Cases  []testCase          `json:"cases"`
}

type testCase struct {
	ID         string     `json:"id"`
	Op         string     `json:"op"`
	Note       string     `json:"note"`
	VKeys      []string   `json:"vkeys"`
	Checkpoint bool       `json:"checkpoint"`
	Proof      []string   `json:"proof"`
	Size       int64      `json:"size"`
	Root       string     `json:"root"`
	Index      int64      `json:"index"`
	Leaf       string     `json:"leaf"`
	OldSize    int64      `json:"old_size"`
	OldRoot    string     `json:"old_root"`
	Store      string     `json:"store"`
	Leaves     []string   `json:"leaves"`
	Pairs      [][2]int64 `json:"pairs"`
	SKey       string     `json:"skey"`
	Text       string     `json:"text"`
	Name       string     `json:"name"`
}

type result struct {
	ID    string `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`

	Text       string      `json:"text,omitempty"`
	Sigs       []string    `json:"sigs,omitempty"`
	Unverified []string    `json:"unverified,omitempty"`
	Checkpoint *checkpoint `json:"checkpoint,omitempty"`
	Hash       string      `json:"hash,omitempty"`
	Hashes     []string    `json:"hashes,omitempty"`
	Indexes    []int64     `json:"indexes,omitempty"`
	Note       string      `json:"note,omitempty"`
	SKey       string      `json:"skey,omitempty"`
	VKey       string      `json:"vkey,omitempty"`
}

// checkpoint is what Go sees in a checkpoint body. Origin, Size, Root and Rest come
// from our reading of C2SP tlog-checkpoint; TlogSize and TlogRoot come from
// tlog.ParseTree itself, given the same text with the origin line replaced by the
// one origin ParseTree accepts ("go.sum database tree").
type checkpoint struct {
	Origin   string   `json:"origin"`
	Size     int64    `json:"size"`
	Root     string   `json:"root"`
	Rest     []string `json:"rest"`
	TlogSize int64    `json:"tlog_size"`
	TlogRoot string   `json:"tlog_root"`
}

func main() {
	var req request
	dec := json.NewDecoder(os.Stdin)
	if err := dec.Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "sumdbcheck: bad request:", err)
		os.Exit(2)
	}
	stores := make(map[string][]tlog.Hash, len(req.Stores))
	for name, list := range req.Stores {
		hashes, err := decodeHashes(list)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sumdbcheck: store %s: %v\n", name, err)
			os.Exit(2)
		}
		stores[name] = hashes
	}
	results := make([]result, len(req.Cases))
	for i, c := range req.Cases {
		r := run(c, stores)
		r.ID = c.ID
		results[i] = r
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(map[string][]result{"results": results}); err != nil {
		fmt.Fprintln(os.Stderr, "sumdbcheck:", err)
		os.Exit(2)
	}
}

func run(c testCase, stores map[string][]tlog.Hash) result {
	var r result
	var err error
	switch c.Op {
	case "open":
		err = openNote(c, &r)
	case "check_record":
		err = checkRecord(c)
	case "check_tree":
		err = checkTree(c)
	case "tree_hash":
		var h tlog.Hash
		h, err = tlog.TreeHash(c.Size, reader(stores, c.Store))
		r.Hash = encode(h)
	case "prove_record":
		var p tlog.RecordProof
		p, err = tlog.ProveRecord(c.Size, c.Index, reader(stores, c.Store))
		r.Hashes = encodeAll(p)
	case "prove_tree":
		var p tlog.TreeProof
		p, err = tlog.ProveTree(c.Size, c.OldSize, reader(stores, c.Store))
		r.Hashes = encodeAll(p)
	case "stored_hashes":
		r.Hashes, err = storedHashes(c.Leaves)
	case "stored_index":
		for _, p := range c.Pairs {
			r.Indexes = append(r.Indexes, tlog.StoredHashIndex(int(p[0]), p[1]))
		}
	case "sign":
		var s note.Signer
		var msg []byte
		if s, err = note.NewSigner(c.SKey); err == nil {
			msg, err = note.Sign(&note.Note{Text: c.Text}, s)
			r.Note = string(msg)
		}
	case "generate":
		r.SKey, r.VKey, err = note.GenerateKey(rand.Reader, c.Name)
	default:
		err = fmt.Errorf("unknown op %q", c.Op)
	}
	r.OK = err == nil
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func openNote(c testCase, r *result) error {
	var vs []note.Verifier
	for _, k := range c.VKeys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return fmt.Errorf("note.NewVerifier(%q): %w", k, err)
		}
		vs = append(vs, v)
	}
	n, err := note.Open([]byte(c.Note), note.VerifierList(vs...))
	if err != nil {
		return fmt.Errorf("note.Open: %w", err)
	}
	r.Text = n.Text
	for _, s := range n.Sigs {
		r.Sigs = append(r.Sigs, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	for _, s := range n.UnverifiedSigs {
		r.Unverified = append(r.Unverified, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
	}
	if c.Checkpoint {
		r.Checkpoint, err = parseCheckpoint(n.Text)
	}
	return err
}

// parseCheckpoint reads the first three lines of a C2SP tlog-checkpoint as strictly as
// tlog.ParseTree reads its own (canonical decimal size, 32-byte base64 root), then
// hands tlog.ParseTree the same body under the go.sum origin to see that the real
// parser agrees and ignores our extension lines.
func parseCheckpoint(text string) (*checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) < 4 || lines[len(lines)-1] != "" {
		return nil, errors.New("checkpoint: fewer than three newline-terminated lines")
	}
	cp := &checkpoint{Origin: lines[0], Rest: lines[3 : len(lines)-1]}
	if cp.Origin == "" {
		return nil, errors.New("checkpoint: empty origin")
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || lines[1] != strconv.FormatInt(n, 10) {
		return nil, fmt.Errorf("checkpoint: size %q is not canonical", lines[1])
	}
	cp.Size = n
	h, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(h) != tlog.HashSize {
		return nil, fmt.Errorf("checkpoint: root %q is not a base64 SHA-256 hash", lines[2])
	}
	cp.Root = base64.StdEncoding.EncodeToString(h)
	if cp.Root != lines[2] {
		return nil, fmt.Errorf("checkpoint: root %q is not canonical base64", lines[2])
	}
	body := "go.sum database tree\n" + strings.SplitN(text, "\n", 2)[1]
	tree, err := tlog.ParseTree([]byte(body))
	if err != nil {
		return nil, fmt.Errorf("tlog.ParseTree: %w", err)
	}
	cp.TlogSize, cp.TlogRoot = tree.N, encode(tree.Hash)
	return cp, nil
}

func checkRecord(c testCase) error {
	proof, err := decodeHashes(c.Proof)
	if err != nil {
		return err
	}
	root, err := decodeHash(c.Root)
	if err != nil {
		return err
	}
	leaf, err := decodeHash(c.Leaf)
	if err != nil {
		return err
	}
	return tlog.CheckRecord(tlog.RecordProof(proof), c.Size, root, c.Index, leaf)
}

func checkTree(c testCase) error {
	proof, err := decodeHashes(c.Proof)
	if err != nil {
		return err
	}
	root, err := decodeHash(c.Root)
	if err != nil {
		return err
	}
	oldRoot, err := decodeHash(c.OldRoot)
	if err != nil {
		return err
	}
	return tlog.CheckTree(tlog.TreeProof(proof), c.Size, root, c.OldSize, oldRoot)
}

func storedHashes(leaves []string) ([]string, error) {
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) { return read(stored, idx) })
	for i, s := range leaves {
		leaf, err := decodeHash(s)
		if err != nil {
			return nil, err
		}
		hs, err := tlog.StoredHashesForRecordHash(int64(i), leaf, r)
		if err != nil {
			return nil, err
		}
		if want := tlog.StoredHashIndex(0, int64(i)); int64(len(stored)) != want {
			return nil, fmt.Errorf("record %d: store holds %d hashes, tlog writes at %d",
				i, len(stored), want)
		}
		stored = append(stored, hs...)
	}
	return encodeAll(stored), nil
}

func reader(stores map[string][]tlog.Hash, name string) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		s, ok := stores[name]
		if !ok {
			return nil, fmt.Errorf("no store named %q", name)
		}
		return read(s, idx)
	})
}

func read(stored []tlog.Hash, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(stored)) {
			return nil, fmt.Errorf("stored hash index %d is outside the %d stored", x, len(stored))
		}
		out[i] = stored[x]
	}
	return out, nil
}

func decodeHash(s string) (tlog.Hash, error) {
	var h tlog.Hash
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != tlog.HashSize {
		return h, fmt.Errorf("hash %q is not 32 bytes of base64", s)
	}
	copy(h[:], raw)
	return h, nil
}

func decodeHashes(list []string) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(list))
	for i, s := range list {
		h, err := decodeHash(s)
		if err != nil {
			return nil, fmt.Errorf("hash %d: %w", i, err)
		}
		out[i] = h
	}
	return out, nil
}

func encode(h tlog.Hash) string { return base64.StdEncoding.EncodeToString(h[:]) }

func encodeAll(hs []tlog.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = encode(h)
	}
	return out
}
