// hcltool: the Terraform checks that need HCL itself, for a machine without Terraform or
// its providers (tests/terraform/check.py runs it; tests/terraform/setup.sh builds it
// from Debian's Go packages of HashiCorp's HCL and go-cty, the libraries Terraform is
// built on).
//
//	hcltool fmt FILE...              files that hclwrite.Format would change (exit 1)
//	hcltool fmt -w FILE...           rewrite them
//	hcltool refs DIR...              undeclared references, unused variables and locals,
//	                                 module outputs that do not exist (exit 1)
//	hcltool doc DIR                  the inputs and outputs of a module as Markdown tables
//	hcltool eval [-var-file F]... [-mocks M.json] DIR EXPR...
//	                                 evaluate expressions in a module (its variables,
//	                                 validations, locals, child modules and outputs);
//	                                 resources and data sources come from the mocks file
//	                                 ({"aws_instance.server": [...], "data.x.y": {...}});
//	                                 prints one JSON object {EXPR: value}
//
// Evaluation uses HCL's own expression engine and go-cty's function library, as Terraform
// does; the Terraform-only functions the modules use are implemented below. It is not
// Terraform: `terraform validate` and `plan` still have to run where the providers can be
// downloaded (terraform/README.md).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/tryfunc"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

func die(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "hcltool: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		die("usage: hcltool fmt|refs|doc|eval ...")
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "fmt":
		os.Exit(cmdFmt(args))
	case "refs":
		os.Exit(cmdRefs(args))
	case "doc":
		os.Exit(cmdDoc(args))
	case "eval":
		os.Exit(cmdEval(args))
	default:
		die("unknown command %q", os.Args[1])
	}
}

// ---------------------------------------------------------------------------- fmt

func cmdFmt(args []string) int {
	write := false
	if len(args) > 0 && args[0] == "-w" {
		write, args = true, args[1:]
	}
	bad := 0
	for _, f := range args {
		src, err := os.ReadFile(f)
		if err != nil {
			die("%v", err)
		}
		if _, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos); diags.HasErrors() {
			fmt.Printf("%s: does not parse: %s\n", f, diags.Error())
			bad++
			continue
		}
		out := hclwrite.Format(src)
		if bytes.Equal(out, src) {
			continue
		}
		if write {
			if err := os.WriteFile(f, out, 0o644); err != nil {
				die("%v", err)
			}
			fmt.Printf("%s: formatted\n", f)
			continue
		}
		fmt.Printf("%s: not canonically formatted (first difference at line %d)\n", f, firstDiffLine(src, out))
		bad++
	}
	if bad > 0 {
		return 1
	}
	return 0
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(la) && i < len(lb); i++ {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	if len(la) < len(lb) {
		return len(la)
	}
	return len(lb)
}

// ---------------------------------------------------------------------------- modules

var rootSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
	{Type: "variable", LabelNames: []string{"name"}},
	{Type: "locals"},
	{Type: "output", LabelNames: []string{"name"}},
	{Type: "module", LabelNames: []string{"name"}},
	{Type: "resource", LabelNames: []string{"type", "name"}},
	{Type: "data", LabelNames: []string{"type", "name"}},
	{Type: "terraform"},
	{Type: "provider", LabelNames: []string{"name"}},
	{Type: "moved"},
	{Type: "import"},
	{Type: "check", LabelNames: []string{"name"}},
}}

type variable struct {
	name        string
	block       *hclsyntax.Block
	typ         cty.Type
	defaults    *typeexpr.Defaults
	typeSrc     string
	def         hcl.Expression
	description string
	sensitive   bool
	nullable    bool
}

type module struct {
	dir       string
	root      string
	srcs      map[string][]byte
	vars      []*variable
	varByName map[string]*variable
	locals    map[string]hcl.Expression
	outputs   map[string]*hclsyntax.Block
	outOrder  []string
	calls     map[string]*hclsyntax.Block
	resources map[string]*hclsyntax.Block // "type.name", "data.type.name"
	files     []*hcl.File
	// evaluation state
	inputs   map[string]cty.Value
	varVal   cty.Value
	localVal map[string]cty.Value
	busy     map[string]bool
	children map[string]*module
	mocks    map[string]cty.Value
}

func loadModule(dir, root string) *module {
	m := &module{dir: dir, root: root, srcs: map[string][]byte{}, varByName: map[string]*variable{},
		locals: map[string]hcl.Expression{}, outputs: map[string]*hclsyntax.Block{},
		calls: map[string]*hclsyntax.Block{}, resources: map[string]*hclsyntax.Block{},
		localVal: map[string]cty.Value{}, busy: map[string]bool{}, children: map[string]*module{}}
	names, _ := filepath.Glob(filepath.Join(dir, "*.tf"))
	if len(names) == 0 {
		die("%s: no .tf files", dir)
	}
	sort.Strings(names)
	for _, name := range names {
		src, err := os.ReadFile(name)
		if err != nil {
			die("%v", err)
		}
		m.srcs[name] = src
		f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
		if diags.HasErrors() {
			die("%s", diags.Error())
		}
		m.files = append(m.files, f)
		body := f.Body.(*hclsyntax.Body)
		if _, diags := body.Content(rootSchema); diags.HasErrors() {
			die("%s", diags.Error())
		}
		for _, b := range body.Blocks {
			switch b.Type {
			case "variable":
				m.addVariable(b)
			case "locals":
				for n, a := range b.Body.Attributes {
					if _, dup := m.locals[n]; dup {
						die("%s: local %q declared twice", dir, n)
					}
					m.locals[n] = a.Expr
				}
			case "output":
				m.outputs[b.Labels[0]] = b
				m.outOrder = append(m.outOrder, b.Labels[0])
			case "module":
				m.calls[b.Labels[0]] = b
			case "resource":
				m.resources[b.Labels[0]+"."+b.Labels[1]] = b
			case "data":
				m.resources["data."+b.Labels[0]+"."+b.Labels[1]] = b
			}
		}
	}
	return m
}

func (m *module) text(r hcl.Range) string {
	return string(r.SliceBytes(m.srcs[r.Filename]))
}

func (m *module) addVariable(b *hclsyntax.Block) {
	v := &variable{name: b.Labels[0], block: b, typ: cty.DynamicPseudoType, nullable: true}
	for n, a := range b.Body.Attributes {
		switch n {
		case "type":
			ty, defs, diags := typeexpr.TypeConstraintWithDefaults(a.Expr)
			if diags.HasErrors() {
				die("%s", diags.Error())
			}
			v.typ, v.defaults, v.typeSrc = ty, defs, m.text(a.Expr.Range())
		case "default":
			v.def = a.Expr
		case "description":
			d, diags := a.Expr.Value(nil)
			if diags.HasErrors() || d.Type() != cty.String {
				die("%s: variable %q: description must be a literal string", m.dir, v.name)
			}
			v.description = d.AsString()
		case "sensitive":
			s, _ := a.Expr.Value(nil)
			v.sensitive = s.True()
		case "nullable":
			s, _ := a.Expr.Value(nil)
			v.nullable = s.True()
		}
	}
	m.vars = append(m.vars, v)
	m.varByName[v.name] = v
}

// ---------------------------------------------------------------------------- eval

func (m *module) fail(r hcl.Range, format string, a ...interface{}) {
	die("%s: %s", r.String(), fmt.Sprintf(format, a...))
}

// instantiate sets the module's input values, applies defaults and types, and runs the
// variables' validation blocks. It returns the validation failures.
func (m *module) instantiate(inputs map[string]cty.Value, mocks map[string]cty.Value) []string {
	m.inputs, m.mocks = inputs, mocks
	for n := range inputs {
		if m.varByName[n] == nil {
			die("%s: no variable %q is declared (an input was given for it)", m.dir, n)
		}
	}
	vals := map[string]cty.Value{}
	for _, v := range m.vars {
		val, given := inputs[v.name]
		if !given || (val.IsNull() && !v.nullable) {
			if v.def == nil {
				die("%s: variable %q is required and has no value", m.dir, v.name)
			}
			d, diags := v.def.Value(nil)
			if diags.HasErrors() {
				die("%s", diags.Error())
			}
			val = d
		}
		if v.defaults != nil {
			val = v.defaults.Apply(val)
		}
		conv, err := convert.Convert(val, v.typ)
		if err != nil {
			die("%s: variable %q: %v", m.dir, v.name, err)
		}
		if v.defaults != nil {
			conv = v.defaults.Apply(conv)
		}
		vals[v.name] = conv
	}
	m.varVal = cty.ObjectVal(vals)
	var failures []string
	for _, v := range m.vars {
		for _, vb := range v.block.Body.Blocks {
			if vb.Type != "validation" {
				continue
			}
			ctx := m.baseCtx()
			ctx.Variables["var"] = m.varVal
			cond, diags := vb.Body.Attributes["condition"].Expr.Value(ctx)
			if diags.HasErrors() {
				die("%s", diags.Error())
			}
			if cond.IsNull() || !cond.True() {
				msg, diags := vb.Body.Attributes["error_message"].Expr.Value(ctx)
				if diags.HasErrors() {
					die("%s", diags.Error())
				}
				failures = append(failures, fmt.Sprintf("var.%s: %s", v.name, msg.AsString()))
			}
		}
	}
	return failures
}

func (m *module) baseCtx() *hcl.EvalContext {
	return &hcl.EvalContext{Variables: map[string]cty.Value{}, Functions: functions(m.dir)}
}

func (m *module) local(name string, r hcl.Range) cty.Value {
	if v, ok := m.localVal[name]; ok {
		return v
	}
	expr, ok := m.locals[name]
	if !ok {
		m.fail(r, "local.%s is not declared in %s", name, m.dir)
	}
	if m.busy["local."+name] {
		m.fail(r, "local.%s depends on itself", name)
	}
	m.busy["local."+name] = true
	v := m.eval(expr)
	delete(m.busy, "local."+name)
	m.localVal[name] = v
	return v
}

func (m *module) child(name string, r hcl.Range) *module {
	if c, ok := m.children[name]; ok {
		return c
	}
	call, ok := m.calls[name]
	if !ok {
		m.fail(r, "module.%s is not declared in %s", name, m.dir)
	}
	src, diags := call.Body.Attributes["source"].Expr.Value(nil)
	if diags.HasErrors() {
		die("%s", diags.Error())
	}
	c := loadModule(filepath.Join(m.dir, src.AsString()), m.root)
	inputs := map[string]cty.Value{}
	for n, a := range call.Body.Attributes {
		switch n {
		case "source", "version", "count", "for_each", "providers", "depends_on":
			continue
		}
		inputs[n] = m.eval(a.Expr)
	}
	if failures := c.instantiate(inputs, m.mocks); len(failures) > 0 {
		die("module.%s: invalid inputs:\n  %s", name, strings.Join(failures, "\n  "))
	}
	m.children[name] = c
	return c
}

func (m *module) output(name string, r hcl.Range) cty.Value {
	b, ok := m.outputs[name]
	if !ok {
		m.fail(r, "output %q is not declared in %s", name, m.dir)
	}
	return m.eval(b.Body.Attributes["value"].Expr)
}

func (m *module) mock(key string, r hcl.Range) cty.Value {
	v, ok := m.mocks[key]
	if !ok {
		m.fail(r, "%s (in %s) needs a value in the mocks file", key, m.dir)
	}
	return v
}

func attrName(t hcl.Traverser) (string, bool) {
	if a, ok := t.(hcl.TraverseAttr); ok {
		return a.Name, true
	}
	return "", false
}

func (m *module) eval(expr hcl.Expression) cty.Value {
	ctx := m.baseCtx()
	locals := map[string]cty.Value{}
	mods := map[string]map[string]cty.Value{}
	res := map[string]map[string]cty.Value{}
	data := map[string]map[string]cty.Value{}
	for _, t := range expr.Variables() {
		root, r := t.RootName(), t.SourceRange()
		switch root {
		case "var":
			ctx.Variables["var"] = m.varVal
		case "path":
			ctx.Variables["path"] = cty.ObjectVal(map[string]cty.Value{
				"module": cty.StringVal(m.dir), "root": cty.StringVal(m.root), "cwd": cty.StringVal(m.root)})
		case "terraform":
			ctx.Variables["terraform"] = cty.ObjectVal(map[string]cty.Value{"workspace": cty.StringVal("default")})
		case "local":
			n, ok := attrName(t[1])
			if !ok {
				m.fail(r, "bad local reference")
			}
			locals[n] = m.local(n, r)
		case "module":
			n, ok := attrName(t[1])
			if !ok {
				m.fail(r, "bad module reference")
			}
			c := m.child(n, r)
			if mods[n] == nil {
				mods[n] = map[string]cty.Value{}
			}
			if len(t) > 2 {
				o, _ := attrName(t[2])
				mods[n][o] = c.output(o, r)
			} else {
				for _, o := range c.outOrder {
					mods[n][o] = c.output(o, r)
				}
			}
		case "data":
			ty, _ := attrName(t[1])
			n, _ := attrName(t[2])
			if data[ty] == nil {
				data[ty] = map[string]cty.Value{}
			}
			data[ty][n] = m.mock("data."+ty+"."+n, r)
		case "count", "each", "self":
			m.fail(r, "%s is only available inside resources, which hcltool does not evaluate", root)
		default:
			n, ok := attrName(t[1])
			if !ok {
				m.fail(r, "bad reference")
			}
			if res[root] == nil {
				res[root] = map[string]cty.Value{}
			}
			res[root][n] = m.mock(root+"."+n, r)
		}
	}
	if len(locals) > 0 {
		ctx.Variables["local"] = cty.ObjectVal(locals)
	}
	if len(mods) > 0 {
		mv := map[string]cty.Value{}
		for n, outs := range mods {
			mv[n] = cty.ObjectVal(outs)
		}
		ctx.Variables["module"] = cty.ObjectVal(mv)
	}
	for ty, byName := range res {
		ctx.Variables[ty] = cty.ObjectVal(byName)
	}
	if len(data) > 0 {
		dv := map[string]cty.Value{}
		for ty, byName := range data {
			dv[ty] = cty.ObjectVal(byName)
		}
		ctx.Variables["data"] = cty.ObjectVal(dv)
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		die("%s", diags.Error())
	}
	return v
}

func readVarFile(name string) map[string]cty.Value {
	src, err := os.ReadFile(name)
	if err != nil {
		die("%v", err)
	}
	out := map[string]cty.Value{}
	if strings.HasSuffix(name, ".json") {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(src, &raw); err != nil {
			die("%s: %v", name, err)
		}
		for k, r := range raw {
			out[k] = jsonVal(r, name)
		}
		return out
	}
	f, diags := hclsyntax.ParseConfig(src, name, hcl.InitialPos)
	if diags.HasErrors() {
		die("%s", diags.Error())
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		die("%s", diags.Error())
	}
	for n, a := range attrs {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			die("%s", diags.Error())
		}
		out[n] = v
	}
	return out
}

func jsonVal(raw []byte, where string) cty.Value {
	ty, err := ctyjson.ImpliedType(raw)
	if err != nil {
		die("%s: %v", where, err)
	}
	v, err := ctyjson.Unmarshal(raw, ty)
	if err != nil {
		die("%s: %v", where, err)
	}
	return v
}

func cmdEval(args []string) int {
	inputs := map[string]cty.Value{}
	mocks := map[string]cty.Value{}
	for len(args) > 1 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-var-file":
			for k, v := range readVarFile(args[1]) {
				inputs[k] = v
			}
		case "-mocks":
			src, err := os.ReadFile(args[1])
			if err != nil {
				die("%v", err)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(src, &raw); err != nil {
				die("%s: %v", args[1], err)
			}
			for k, r := range raw {
				mocks[k] = jsonVal(r, args[1])
			}
		default:
			die("unknown option %s", args[0])
		}
		args = args[2:]
	}
	if len(args) < 2 {
		die("usage: hcltool eval [-var-file F]... [-mocks M] DIR EXPR...")
	}
	dir := filepath.Clean(args[0])
	m := loadModule(dir, dir)
	if failures := m.instantiate(inputs, mocks); len(failures) > 0 {
		// The validation messages, one a line, for the tests of the validation blocks.
		fmt.Println(strings.Join(failures, "\n"))
		return 3
	}
	out := map[string]json.RawMessage{}
	for _, src := range args[1:] {
		expr, diags := hclsyntax.ParseExpression([]byte(src), "<expr>", hcl.InitialPos)
		if diags.HasErrors() {
			die("%s", diags.Error())
		}
		v := m.eval(expr)
		if !v.IsWhollyKnown() {
			die("%s is not known", src)
		}
		b, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			die("%s: %v", src, err)
		}
		out[src] = b
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
	return 0
}

// ---------------------------------------------------------------------------- refs

// cmdRefs checks each module: every reference names something declared (a variable, a
// local, a module call and one of its outputs, a resource or data source), and every
// variable and local is used somewhere.
func cmdRefs(dirs []string) int {
	problems := 0
	report := func(format string, a ...interface{}) {
		fmt.Printf(format+"\n", a...)
		problems++
	}
	for _, dir := range dirs {
		m := loadModule(filepath.Clean(dir), filepath.Clean(dir))
		usedVar, usedLocal := map[string]bool{}, map[string]bool{}
		check := func(t hcl.Traversal, scope map[string]bool) {
			root, r := t.RootName(), t.SourceRange()
			if scope[root] {
				return
			}
			second := func() string {
				if len(t) < 2 {
					return ""
				}
				n, _ := attrName(t[1])
				return n
			}
			switch root {
			case "var":
				n := second()
				usedVar[n] = true
				if m.varByName[n] == nil {
					report("%s: var.%s is not declared", r, n)
				}
			case "local":
				n := second()
				usedLocal[n] = true
				if _, ok := m.locals[n]; !ok {
					report("%s: local.%s is not declared", r, n)
				}
			case "module":
				n := second()
				call, ok := m.calls[n]
				if !ok {
					report("%s: module.%s is not declared", r, n)
					return
				}
				if len(t) > 2 {
					o, _ := attrName(t[2])
					src, _ := call.Body.Attributes["source"].Expr.Value(nil)
					c := loadModule(filepath.Join(m.dir, src.AsString()), m.root)
					if _, ok := c.outputs[o]; !ok {
						report("%s: module.%s has no output %q", r, n, o)
					}
				}
			case "data":
				if len(t) < 3 {
					report("%s: incomplete data reference", r)
					return
				}
				ty, _ := attrName(t[1])
				n, _ := attrName(t[2])
				if m.resources["data."+ty+"."+n] == nil {
					report("%s: data.%s.%s is not declared", r, ty, n)
				}
			case "path", "terraform", "count", "each", "self":
			default:
				n := second()
				if m.resources[root+"."+n] == nil {
					report("%s: %s.%s is not declared", r, root, n)
				}
			}
		}
		var walk func(body *hclsyntax.Body, scope map[string]bool, blockType string)
		walk = func(body *hclsyntax.Body, scope map[string]bool, blockType string) {
			for name, a := range body.Attributes {
				// Not references: a variable's type, the attributes lifecycle ignores, a
				// provider alias.
				if (blockType == "variable" && name == "type") || (blockType == "lifecycle" && name == "ignore_changes") ||
					(blockType == "resource" && name == "provider") || (blockType == "data" && name == "provider") ||
					(blockType == "module" && name == "providers") {
					continue
				}
				for _, t := range a.Expr.Variables() {
					check(t, scope)
				}
				// templatefile("x.tftpl", {...}): the template may only use the keys given.
				checkTemplates(m, a.Expr, report)
			}
			for _, b := range body.Blocks {
				inner := scope
				if b.Type == "dynamic" {
					inner = map[string]bool{}
					for k := range scope {
						inner[k] = true
					}
					it := b.Labels[0]
					if a, ok := b.Body.Attributes["iterator"]; ok {
						it = hcl.ExprAsKeyword(a.Expr)
					}
					inner[it] = true
				}
				walk(b.Body, inner, b.Type)
			}
		}
		for _, f := range m.files {
			walk(f.Body.(*hclsyntax.Body), map[string]bool{}, "")
		}
		for _, v := range m.vars {
			if !usedVar[v.name] {
				report("%s: variable %q is declared but not used", v.block.DefRange(), v.name)
			}
			if v.description == "" {
				report("%s: variable %q has no description", v.block.DefRange(), v.name)
			}
		}
		for n, e := range m.locals {
			if !usedLocal[n] {
				report("%s: local %q is declared but not used", e.Range(), n)
			}
		}
		for _, n := range m.outOrder {
			if _, ok := m.outputs[n].Body.Attributes["description"]; !ok {
				report("%s: output %q has no description", m.outputs[n].DefRange(), n)
			}
		}
		for n, call := range m.calls {
			src, _ := call.Body.Attributes["source"].Expr.Value(nil)
			c := loadModule(filepath.Join(m.dir, src.AsString()), m.root)
			for a := range call.Body.Attributes {
				switch a {
				case "source", "version", "count", "for_each", "providers", "depends_on":
					continue
				}
				if c.varByName[a] == nil {
					report("%s: module.%s has no variable %q", call.Body.Attributes[a].SrcRange, n, a)
				}
			}
			for _, v := range c.vars {
				if _, ok := call.Body.Attributes[v.name]; !ok && v.def == nil {
					report("%s: module.%s needs %q (it has no default)", call.DefRange(), n, v.name)
				}
			}
		}
	}
	if problems > 0 {
		return 1
	}
	return 0
}

func checkTemplates(m *module, expr hclsyntax.Expression, report func(string, ...interface{})) {
	hclsyntax.VisitAll(expr, func(n hclsyntax.Node) hcl.Diagnostics {
		call, ok := n.(*hclsyntax.FunctionCallExpr)
		if !ok || call.Name != "templatefile" || len(call.Args) != 2 {
			return nil
		}
		ctx := m.baseCtx()
		ctx.Variables["path"] = cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(m.dir)})
		p, diags := call.Args[0].Value(ctx)
		if diags.HasErrors() {
			return nil
		}
		obj, ok := call.Args[1].(*hclsyntax.ObjectConsExpr)
		if !ok {
			return nil
		}
		given := map[string]bool{}
		for _, it := range obj.Items {
			given[hcl.ExprAsKeyword(it.KeyExpr)] = true
		}
		src, err := os.ReadFile(p.AsString())
		if err != nil {
			report("%s: %v", call.Range(), err)
			return nil
		}
		tmpl, diags := hclsyntax.ParseTemplate(src, p.AsString(), hcl.InitialPos)
		if diags.HasErrors() {
			report("%s", diags.Error())
			return nil
		}
		used := map[string]bool{}
		for _, t := range tmpl.Variables() {
			used[t.RootName()] = true
			if !given[t.RootName()] {
				report("%s: %s is not passed to the template", t.SourceRange(), t.RootName())
			}
		}
		for k := range given {
			if !used[k] {
				report("%s: %q is passed to %s but not used there", call.Range(), k, p.AsString())
			}
		}
		return nil
	})
}

// ---------------------------------------------------------------------------- doc

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", "<br>")
}

func code(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return "<code>" + strings.ReplaceAll(strings.ReplaceAll(mdEscape(s), "<", "&lt;"), ">", "&gt;") + "</code>"
}

func cmdDoc(args []string) int {
	if len(args) != 1 {
		die("usage: hcltool doc DIR")
	}
	m := loadModule(filepath.Clean(args[0]), filepath.Clean(args[0]))
	var b strings.Builder
	b.WriteString("### Inputs\n\n| name | description | type | default |\n|---|---|---|---|\n")
	vars := append([]*variable(nil), m.vars...)
	sort.SliceStable(vars, func(i, j int) bool {
		// Required ones first, then by name.
		if (vars[i].def == nil) != (vars[j].def == nil) {
			return vars[i].def == nil
		}
		return vars[i].name < vars[j].name
	})
	for _, v := range vars {
		def := "required"
		if v.def != nil {
			def = code(m.text(v.def.Range()))
		}
		ty := "any"
		if v.typeSrc != "" {
			ty = v.typeSrc
		}
		desc := v.description
		if v.sensitive {
			desc += " (sensitive)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", v.name, mdEscape(desc), code(ty), def)
	}
	b.WriteString("\n### Outputs\n\n| name | description |\n|---|---|\n")
	outs := append([]string(nil), m.outOrder...)
	sort.Strings(outs)
	for _, n := range outs {
		desc := ""
		if a, ok := m.outputs[n].Body.Attributes["description"]; ok {
			d, _ := a.Expr.Value(nil)
			desc = d.AsString()
		}
		fmt.Fprintf(&b, "| `%s` | %s |\n", n, mdEscape(desc))
	}
	fmt.Print(b.String())
	return 0
}

// ---------------------------------------------------------------------------- functions

func functions(dir string) map[string]function.Function {
	fns := map[string]function.Function{
		"abs": stdlib.AbsoluteFunc, "ceil": stdlib.CeilFunc, "chomp": stdlib.ChompFunc,
		"chunklist": stdlib.ChunklistFunc, "coalesce": stdlib.CoalesceFunc,
		"coalescelist": stdlib.CoalesceListFunc, "compact": stdlib.CompactFunc,
		"concat": stdlib.ConcatFunc, "contains": stdlib.ContainsFunc, "distinct": stdlib.DistinctFunc,
		"element": stdlib.ElementFunc, "flatten": stdlib.FlattenFunc, "floor": stdlib.FloorFunc,
		"format": stdlib.FormatFunc, "formatlist": stdlib.FormatListFunc, "indent": stdlib.IndentFunc,
		"join": stdlib.JoinFunc, "jsondecode": stdlib.JSONDecodeFunc, "jsonencode": stdlib.JSONEncodeFunc,
		"keys": stdlib.KeysFunc, "length": stdlib.LengthFunc, "lookup": stdlib.LookupFunc,
		"lower": stdlib.LowerFunc, "max": stdlib.MaxFunc, "merge": stdlib.MergeFunc, "min": stdlib.MinFunc,
		"parseint": stdlib.ParseIntFunc, "pow": stdlib.PowFunc, "range": stdlib.RangeFunc,
		"regex": stdlib.RegexFunc, "regexall": stdlib.RegexAllFunc, "reverse": stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc, "setproduct": stdlib.SetProductFunc,
		"setsubtract": stdlib.SetSubtractFunc, "setunion": stdlib.SetUnionFunc, "signum": stdlib.SignumFunc,
		"slice": stdlib.SliceFunc, "sort": stdlib.SortFunc, "split": stdlib.SplitFunc,
		"strrev": stdlib.ReverseFunc, "substr": stdlib.SubstrFunc, "title": stdlib.TitleFunc,
		"trim": stdlib.TrimFunc, "trimprefix": stdlib.TrimPrefixFunc, "trimspace": stdlib.TrimSpaceFunc,
		"trimsuffix": stdlib.TrimSuffixFunc, "upper": stdlib.UpperFunc, "values": stdlib.ValuesFunc,
		"zipmap":   stdlib.ZipmapFunc,
		"tostring": stdlib.MakeToFunc(cty.String), "tonumber": stdlib.MakeToFunc(cty.Number),
		"tobool": stdlib.MakeToFunc(cty.Bool), "tolist": stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"toset": stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tomap": stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"try":   tryfunc.TryFunc, "can": tryfunc.CanFunc,
		"replace":      replaceFunc,
		"base64encode": strFunc(func(s string) (string, error) { return base64.StdEncoding.EncodeToString([]byte(s)), nil }),
		"sha256": strFunc(func(s string) (string, error) {
			h := sha256.Sum256([]byte(s))
			return hex.EncodeToString(h[:]), nil
		}),
		"startswith": str2BoolFunc(strings.HasPrefix), "endswith": str2BoolFunc(strings.HasSuffix),
		"alltrue": boolsFunc(true), "anytrue": boolsFunc(false),
		"one": oneFunc, "cidrhost": cidrhostFunc, "cidrsubnet": cidrsubnetFunc, "file": fileFunc(dir),
	}
	fns["templatefile"] = templatefileFunc(fns)
	return fns
}

func strFunc(f func(string) (string, error)) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			out, err := f(args[0].AsString())
			return cty.StringVal(out), err
		},
	})
}

func str2BoolFunc(f func(string, string) bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "s", Type: cty.String}, {Name: "x", Type: cty.String}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.BoolVal(f(args[0].AsString(), args[1].AsString())), nil
		},
	})
}

func boolsFunc(all bool) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "list", Type: cty.List(cty.Bool)}},
		Type:   function.StaticReturnType(cty.Bool),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			for it := args[0].ElementIterator(); it.Next(); {
				_, v := it.Element()
				if v.IsNull() {
					if all {
						return cty.False, nil
					}
					continue
				}
				if v.True() != all {
					return cty.BoolVal(!all), nil
				}
			}
			return cty.BoolVal(all), nil
		},
	})
}

var oneFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "list", Type: cty.DynamicPseudoType}},
	Type: func(args []cty.Value) (cty.Type, error) {
		ty := args[0].Type()
		if ty.IsListType() || ty.IsSetType() {
			return ty.ElementType(), nil
		}
		if ty.IsTupleType() && len(ty.TupleElementTypes()) <= 1 {
			if len(ty.TupleElementTypes()) == 0 {
				return cty.DynamicPseudoType, nil
			}
			return ty.TupleElementTypes()[0], nil
		}
		return cty.NilType, fmt.Errorf("one() needs a list, set or tuple of at most one element")
	},
	Impl: func(args []cty.Value, retType cty.Type) (cty.Value, error) {
		l := args[0].LengthInt()
		if l == 0 {
			return cty.NullVal(retType), nil
		}
		if l > 1 {
			return cty.NilVal, fmt.Errorf("one() got %d elements", l)
		}
		it := args[0].ElementIterator()
		it.Next()
		_, v := it.Element()
		return v, nil
	},
})

// replace: Terraform's, which treats a substring in slashes as a regular expression.
var replaceFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "str", Type: cty.String}, {Name: "substr", Type: cty.String}, {Name: "replace", Type: cty.String}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		s, sub, rep := args[0].AsString(), args[1].AsString(), args[2].AsString()
		if len(sub) > 1 && sub[0] == '/' && sub[len(sub)-1] == '/' {
			re, err := regexp.Compile(sub[1 : len(sub)-1])
			if err != nil {
				return cty.NilVal, err
			}
			return cty.StringVal(re.ReplaceAllString(s, rep)), nil
		}
		return cty.StringVal(strings.ReplaceAll(s, sub, rep)), nil
	},
})

var cidrhostFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "hostnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		_, n, err := net.ParseCIDR(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		num, _ := args[1].AsBigFloat().Int(nil)
		ones, bits := n.Mask.Size()
		max := new(big.Int).Lsh(big.NewInt(1), uint(bits-ones))
		if num.Sign() < 0 {
			num.Add(num, max)
		}
		if num.Sign() < 0 || num.Cmp(max) >= 0 {
			return cty.NilVal, fmt.Errorf("prefix %s has no host %s", args[0].AsString(), args[1].AsBigFloat().String())
		}
		ip := new(big.Int).SetBytes(n.IP)
		ip.Add(ip, num)
		b := ip.Bytes()
		out := make(net.IP, len(n.IP))
		copy(out[len(out)-len(b):], b)
		return cty.StringVal(out.String()), nil
	},
})

var cidrsubnetFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "prefix", Type: cty.String}, {Name: "newbits", Type: cty.Number}, {Name: "netnum", Type: cty.Number}},
	Type:   function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		_, n, err := net.ParseCIDR(args[0].AsString())
		if err != nil {
			return cty.NilVal, err
		}
		nb, _ := args[1].AsBigFloat().Int64()
		num, _ := args[2].AsBigFloat().Int(nil)
		ones, bits := n.Mask.Size()
		if ones+int(nb) > bits || nb < 0 {
			return cty.NilVal, fmt.Errorf("cannot extend prefix /%d by %d bits", ones, nb)
		}
		max := new(big.Int).Lsh(big.NewInt(1), uint(nb))
		if num.Sign() < 0 || num.Cmp(max) >= 0 {
			return cty.NilVal, fmt.Errorf("prefix extension of %d bits has no network number %s", nb, num.String())
		}
		ip := new(big.Int).SetBytes(n.IP)
		ip.Add(ip, new(big.Int).Lsh(num, uint(bits-ones-int(nb))))
		b := ip.Bytes()
		out := make(net.IP, len(n.IP))
		copy(out[len(out)-len(b):], b)
		return cty.StringVal(fmt.Sprintf("%s/%d", out.String(), ones+int(nb))), nil
	},
})

func fileFunc(dir string) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			b, err := os.ReadFile(args[0].AsString())
			return cty.StringVal(string(b)), err
		},
	})
}

func templatefileFunc(fns map[string]function.Function) function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}, {Name: "vars", Type: cty.DynamicPseudoType}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			name := args[0].AsString()
			src, err := os.ReadFile(name)
			if err != nil {
				return cty.NilVal, err
			}
			tmpl, diags := hclsyntax.ParseTemplate(src, name, hcl.InitialPos)
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			inner := map[string]function.Function{}
			for k, f := range fns {
				if k != "templatefile" {
					inner[k] = f
				}
			}
			ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}, Functions: inner}
			for it := args[1].ElementIterator(); it.Next(); {
				k, v := it.Element()
				ctx.Variables[k.AsString()] = v
			}
			v, diags := tmpl.Value(ctx)
			if diags.HasErrors() {
				return cty.NilVal, diags
			}
			return convert.Convert(v, cty.String)
		},
	})
}
