// Package health checks how GitOps tools judge Slipway's objects: Argo CD's health script
// (manifests/argocd/health.lua, run by gopher-lua, the interpreter Argo CD embeds, with the
// libraries Argo CD opens) and kstatus (sigs.k8s.io/cli-utils, what Flux and `kubectl wait`
// style tools compute), over status objects recorded from the controller's own condition
// builders (testdata/objects.json, written by controller/tests/health_fixtures.rs).
//
// A new phase or reason: record it there, then add one line to the table below.
package health

import (
	"os"
	"sort"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// recorded object -> Argo CD health status, kstatus status
var table = []struct{ object, argo, kstatus string }{
	// No status yet: kstatus treats an object without conditions or observedGeneration as Current
	// (so `kstatus` alone cannot tell "not reconciled yet" from "done"; wait for Ready instead).
	{"environment-new", "Progressing", "Current"},
	{"environment-reachable", "Healthy", "Current"},
	{"environment-unreachable", "Progressing", "InProgress"},
	{"environment-host-key-mismatch", "Degraded", "Failed"},
	{"environment-secret-not-found", "Degraded", "Failed"},

	{"deployrequest-new", "Progressing", "Current"},
	{"deployrequest-Queued-Queued", "Progressing", "InProgress"},
	{"deployrequest-Queued-HostBusy", "Progressing", "InProgress"},
	{"deployrequest-Queued-OutsideDeployWindow", "Progressing", "InProgress"},
	{"deployrequest-Preflight-Preflight", "Progressing", "InProgress"},
	{"deployrequest-Migrating-Migrating", "Progressing", "InProgress"},
	{"deployrequest-Downgrading-Downgrading", "Progressing", "InProgress"},
	{"deployrequest-Rebuilding-Rebuilding", "Progressing", "InProgress"},
	{"deployrequest-Verifying-Verifying", "Progressing", "InProgress"},
	{"deployrequest-RollingBack-RollingBack", "Progressing", "InProgress"},
	{"deployrequest-Restarting-Restarting", "Progressing", "InProgress"},
	{"deployrequest-Baking-Baking", "Progressing", "InProgress"},
	{"deployrequest-Rehearsing-Rehearsing", "Progressing", "InProgress"},
	{"deployrequest-Succeeded", "Healthy", "Current"},
	{"deployrequest-Succeeded-UpToDate", "Healthy", "Current"},
	{"deployrequest-Succeeded-stale-generation", "Progressing", "InProgress"},
	{"deployrequest-Failed-IssueRequired", "Degraded", "Failed"},
	{"deployrequest-Failed-EnvironmentNotFound", "Degraded", "Failed"},
	{"deployrequest-Failed-EnvKeysMissing", "Degraded", "Failed"},
	{"deployrequest-Failed-MigrationFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-RebuildFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-VerificationFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-RollbackFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-EnvironmentDeleted", "Degraded", "Failed"},
	{"deployrequest-Failed-SecretInCompose", "Degraded", "Failed"},
	{"deployrequest-Failed-LogErrorsFound", "Degraded", "Failed"},
	{"deployrequest-Failed-RestartFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-BakeFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-UrlNotAllowed", "Degraded", "Failed"},
	{"deployrequest-Failed-RehearsalFailed", "Degraded", "Failed"},
	{"deployrequest-Failed-RollbackNotTested", "Degraded", "Failed"},
	{"deployrequest-RolledBack", "Degraded", "Failed"},

	{"rollback-new", "Progressing", "Current"},
	{"rollback-Queued-Queued", "Progressing", "InProgress"},
	{"rollback-Queued-HostBusy", "Progressing", "InProgress"},
	{"rollback-Queued-OutsideDeployWindow", "Progressing", "InProgress"},
	{"rollback-Preflight-Preflight", "Progressing", "InProgress"},
	{"rollback-Migrating-Migrating", "Progressing", "InProgress"},
	{"rollback-Downgrading-Downgrading", "Progressing", "InProgress"},
	{"rollback-Rebuilding-Rebuilding", "Progressing", "InProgress"},
	{"rollback-Verifying-Verifying", "Progressing", "InProgress"},
	{"rollback-RollingBack-RollingBack", "Progressing", "InProgress"},
	{"rollback-Restarting-Restarting", "Progressing", "InProgress"},
	{"rollback-Baking-Baking", "Progressing", "InProgress"},
	{"rollback-Rehearsing-Rehearsing", "Progressing", "InProgress"},
	{"rollback-Succeeded", "Healthy", "Current"},
	{"rollback-Succeeded-UpToDate", "Healthy", "Current"},
	{"rollback-Succeeded-stale-generation", "Progressing", "InProgress"},
	{"rollback-Failed-IssueRequired", "Degraded", "Failed"},
	{"rollback-Failed-EnvironmentNotFound", "Degraded", "Failed"},
	{"rollback-Failed-EnvKeysMissing", "Degraded", "Failed"},
	{"rollback-Failed-MigrationFailed", "Degraded", "Failed"},
	{"rollback-Failed-RebuildFailed", "Degraded", "Failed"},
	{"rollback-Failed-VerificationFailed", "Degraded", "Failed"},
	{"rollback-Failed-RollbackFailed", "Degraded", "Failed"},
	{"rollback-Failed-EnvironmentDeleted", "Degraded", "Failed"},
	{"rollback-Failed-SecretInCompose", "Degraded", "Failed"},
	{"rollback-Failed-LogErrorsFound", "Degraded", "Failed"},
	{"rollback-Failed-RestartFailed", "Degraded", "Failed"},
	{"rollback-Failed-BakeFailed", "Degraded", "Failed"},
	{"rollback-Failed-UrlNotAllowed", "Degraded", "Failed"},
	{"rollback-Failed-RehearsalFailed", "Degraded", "Failed"},
	{"rollback-Failed-RollbackNotTested", "Degraded", "Failed"},
	{"rollback-RolledBack", "Degraded", "Failed"},
}

const script = "../../manifests/argocd/health.lua"

// recorded reads the objects as the API machinery does (integers stay int64).
func recorded(t *testing.T) map[string]map[string]interface{} {
	t.Helper()
	data, err := os.ReadFile("testdata/objects.json")
	if err != nil {
		t.Fatal(err)
	}
	var objects map[string]map[string]interface{}
	if err := json.Unmarshal(data, &objects); err != nil {
		t.Fatal(err)
	}
	return objects
}

func TestEveryRecordedObjectHasOneLine(t *testing.T) {
	objects := recorded(t)
	lines := map[string]bool{}
	for _, c := range table {
		if lines[c.object] {
			t.Errorf("%s has two lines", c.object)
		}
		lines[c.object] = true
		if _, ok := objects[c.object]; !ok {
			t.Errorf("%s is not recorded in testdata/objects.json", c.object)
		}
	}
	var missing []string
	for name := range objects {
		if !lines[name] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("recorded objects without a line in the table: %v", missing)
	}
}

func TestArgoCDHealth(t *testing.T) {
	code, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	objects := recorded(t)
	for _, c := range table {
		got, message, err := argoHealth(string(code), objects[c.object])
		if err != nil {
			t.Errorf("%s: %v", c.object, err)
			continue
		}
		if got != c.argo {
			t.Errorf("%s: Argo CD health %s (%q), want %s", c.object, got, message, c.argo)
		}
		if message == "" {
			t.Errorf("%s: no health message", c.object)
		}
	}
}

func TestKstatus(t *testing.T) {
	objects := recorded(t)
	for _, c := range table {
		result, err := status.Compute(&unstructured.Unstructured{Object: objects[c.object]})
		if err != nil {
			t.Errorf("%s: %v", c.object, err)
			continue
		}
		if result.Status.String() != c.kstatus {
			t.Errorf("%s: kstatus %s (%q), want %s", c.object, result.Status, result.Message, c.kstatus)
		}
	}
}

// The ConfigMap patch users apply carries health.lua, unchanged, for each kind.
func TestArgoCDConfigMapPatchCarriesTheScript(t *testing.T) {
	code, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../manifests/argocd/argocd-cm-patch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var patch struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &patch); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"Environment", "DeployRequest", "Rollback"} {
		key := "resource.customizations.health.slipway.dev_" + kind
		if strings.TrimSpace(patch.Data[key]) != strings.TrimSpace(string(code)) {
			t.Errorf("%s in argocd-cm-patch.yaml is not health.lua", key)
		}
	}
}

// argoHealth runs a health script as Argo CD does: the libraries it opens, the object as the
// global `obj`, a table {status, message} returned.
func argoHealth(code string, object map[string]interface{}) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoString(code); err != nil {
		return "", "", err
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", nil
	}
	return lua.LVAsString(result.RawGetString("status")), lua.LVAsString(result.RawGetString("message")), nil
}

func toLua(l *lua.LState, v interface{}) lua.LValue {
	switch v := v.(type) {
	case map[string]interface{}:
		t := l.NewTable()
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	case []interface{}:
		t := l.NewTable()
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}
