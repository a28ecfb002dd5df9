// check.mjs parses PowerShell files with the tree-sitter PowerShell grammar
// and reports syntax errors and every construct that evaluates a string as
// code. Used by runspace's TestBootstrapGrammar:
//
//   node --liftoff-only check.mjs stage0=FILE stage1=FILE ...
//
// (--liftoff-only: V8 would otherwise spend tens of CPU seconds optimizing
// the 1 MB grammar wasm in the background for a parse that takes 50 ms.)
//
// stage0 files may contain the one designed evaluation, stage 0 running
// stage 1: `. ([ScriptBlock]::Create(...))`, exactly once. stage1 files may
// invoke with & only the allowlisted cmdlet variable, $cmdlet. It prints
// one JSON object {file: [finding, ...]} and exits 0 (findings are data;
// the Go test decides), or 2 when it cannot run.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { Parser, Language } from 'web-tree-sitter';

const here = dirname(fileURLToPath(import.meta.url));
const wasm = join(here, 'node_modules', 'tree-sitter-powershell', 'tree-sitter-powershell.wasm');

// Commands that run a string (or a file, or a new process) as code, by name
// and alias, compared lowercased without a module qualifier or ".exe".
const bannedCommands = new Map(Object.entries({
  'invoke-expression': 'Invoke-Expression', iex: 'Invoke-Expression',
  'invoke-command': 'Invoke-Command', icm: 'Invoke-Command',
  'add-type': 'Add-Type',
  'new-module': 'New-Module', nmo: 'New-Module',
  'import-module': 'Import-Module', ipmo: 'Import-Module',
  'start-job': 'Start-Job', sajb: 'Start-Job', 'start-threadjob': 'Start-ThreadJob',
  'invoke-item': 'Invoke-Item', ii: 'Invoke-Item',
  'start-process': 'Start-Process', saps: 'Start-Process', start: 'Start-Process',
  'set-alias': 'Set-Alias', sal: 'Set-Alias', 'new-alias': 'New-Alias', nal: 'New-Alias',
  'register-objectevent': 'Register-ObjectEvent', 'register-engineevent': 'Register-EngineEvent',
  'invoke-wmimethod': 'Invoke-WmiMethod', 'invoke-cimmethod': 'Invoke-CimMethod',
  powershell: 'powershell', pwsh: 'pwsh', cmd: 'cmd',
}));

// Methods that compile or run a string, on any object.
const bannedMethods = new Set(['invokescript', 'newscriptblock', 'expandstring', 'addscript',
  'invoke', 'invokereturnasis', 'invokewithcontext']);
const scriptBlockTypes = new Set(['scriptblock', 'system.management.automation.scriptblock',
  'management.automation.scriptblock']);
const assemblyLoads = new Set(['load', 'loadfrom', 'loadfile', 'loadwithpartialname', 'unsafeloadfrom']);

function typeName(node) {
  if (node?.type !== 'type_literal') return '';
  return node.text.replace(/^\[|\]$/g, '').trim().toLowerCase();
}

// unwrap descends through the grammar's single-child expression chains
// (pipeline > logical_expression > ... > unary_expression).
function unwrap(node) {
  while (node.namedChildCount === 1 && node.namedChild(0).text === node.text) node = node.namedChild(0);
  return node;
}

// memberOf returns the member node of an invokation_expression: the named
// child between the target and the argument list.
function memberOf(node) {
  return node.namedChildren.slice(1).find((c) => c.type !== 'argument_list') ?? null;
}

// memberName returns a method name, lowercased and unquoted ($x.'Name'()
// is the same call), or null when the name is computed ($x.$name()).
function memberName(member) {
  if (!member) return '';
  let x = member; // member_name > simple_name | string_literal > ... | variable
  while (x.namedChildCount === 1) x = x.namedChild(0);
  switch (x.type) {
    case 'simple_name':
      return x.text.toLowerCase();
    case 'verbatim_string_characters':
    case 'expandable_string_literal':
      if (/^(['"])[A-Za-z_][A-Za-z0-9_]*\1$/.test(x.text)) return x.text.slice(1, -1).toLowerCase();
      return null;
    default:
      return null;
  }
}

function isScriptBlockCreate(node) {
  return memberName(memberOf(node)) === 'create' && scriptBlockTypes.has(typeName(node.namedChild(0)));
}

function commandName(text) {
  let n = text.trim().toLowerCase();
  n = n.slice(n.lastIndexOf('\\') + 1);
  return n.endsWith('.exe') ? n.slice(0, -4) : n;
}

function check(root, mode) {
  const findings = [];
  const add = (node, msg) => findings.push({
    line: node.startPosition.row + 1, col: node.startPosition.column + 1, msg, text: node.text.slice(0, 80),
  });
  let designed = 0;
  const allowed = new Set(); // ids of the designed [ScriptBlock]::Create
  const walk = (node) => {
    if (node.isError) add(node, 'syntax error');
    else if (node.isMissing) add(node, `syntax error: missing ${node.type}`);
    switch (node.type) {
      case 'command': {
        const op = node.children.find((c) => c.type === 'command_invokation_operator');
        const nameNode = node.childForFieldName('command_name');
        if (op) {
          const callee = nameNode ? unwrap(nameNode) : null;
          const isCmdletVar = mode === 'stage1' && op.text === '&' && callee?.type === 'variable' &&
            callee.text.toLowerCase() === '$cmdlet';
          let create = null;
          if (mode === 'stage0' && op.text === '.' && callee?.type === 'parenthesized_expression') {
            const inner = unwrap(callee.namedChild(0));
            if (inner.type === 'invokation_expression' && isScriptBlockCreate(inner)) create = inner;
          }
          if (create) {
            designed++;
            allowed.add(create.id);
          } else if (!isCmdletVar) {
            add(node, `invocation operator ${op.text} applied to ${callee ? callee.text.slice(0, 40) : 'nothing'}`);
          }
        } else if (nameNode) {
          const name = commandName(nameNode.text);
          if (bannedCommands.has(name)) add(node, `command ${bannedCommands.get(name)} evaluates code`);
          if (['foreach-object', '%', 'foreach'].includes(name)) {
            const elems = node.childForFieldName('command_elements');
            for (const e of elems ? elems.namedChildren : []) {
              if (e.type !== 'command_argument_sep' && unwrap(e).type !== 'script_block_expression') {
                add(e, 'ForEach-Object with something other than a script block (-MemberName invokes by name)');
              }
            }
          }
        }
        break;
      }
      case 'invokation_expression': {
        const target = node.namedChild(0);
        const member = memberOf(node);
        const m = memberName(member);
        if (m === null) add(node, `method called by a computed name ${member?.text ?? ''}`);
        else if (bannedMethods.has(m)) add(node, `method ${member.text.replace(/^['"]|['"]$/g, '')} evaluates code`);
        if (isScriptBlockCreate(node) && !allowed.has(node.id)) add(node, '[scriptblock]::Create compiles a string');
        if (assemblyLoads.has(m) && typeName(target).endsWith('assembly')) add(node, `assembly ${member.text} loads code`);
        break;
      }
      case 'variable':
        if (/^\$(\{)?executioncontext\b/i.test(node.text)) add(node, '$ExecutionContext gives access to InvokeCommand');
        break;
    }
    for (const c of node.children) walk(c);
  };
  walk(root);
  if (mode === 'stage0' && designed !== 1) {
    add(root, `stage 0 must run stage 1 exactly once with . ([ScriptBlock]::Create(...)), found ${designed}`);
  }
  return findings;
}

async function main() {
  await Parser.init();
  const lang = await Language.load(wasm);
  const parser = new Parser();
  parser.setLanguage(lang);
  const out = {};
  for (const arg of process.argv.slice(2)) {
    const eq = arg.indexOf('=');
    const mode = arg.slice(0, eq);
    const file = arg.slice(eq + 1);
    if (eq < 0 || (mode !== 'stage0' && mode !== 'stage1')) throw new Error(`argument ${arg}: want stage0=FILE or stage1=FILE`);
    const tree = parser.parse(readFileSync(file, 'utf8'));
    out[file] = check(tree.rootNode, mode);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`check.mjs: ${e.stack ?? e}\n`);
  process.exit(2);
});
