// The published declarations are the documented API only. Emits the declarations of lib/index.ts the way
// `npm run build` does (tsconfig.build.json: stripInternal drops members marked @internal) into a scratch
// directory, or reads an existing build with `--dist <dir>` (the directory holding lib/index.d.ts), then walks
// everything a user can reach from the entry point (its exports, the `errors` namespace, and the plugin's
// `declare module 'fastify'` augmentations) and fails, printing each offence with its file and line, when:
//   - a class or interface member whose name starts with `_` is visible (not private);
//   - a declaration reached from the public API is not itself exported from the entry point (a user would meet
//     a type they cannot name: an internal type leaking through a signature);
//   - a name on the INTERNAL list below is exported or reached at all;
//   - a class on the NO_PUBLIC_CONSTRUCTOR list declares a public constructor (sockets and the server are
//     created by the plugin, so their constructors' option bags are not API);
//   - `errors` holds anything but FST_WS_* constructors, HandshakeRejectedError and the WebSocketError type;
//   - the declarations do not compile on their own (say, a reference to a declaration stripInternal removed).
// Usage: node scripts/check-dts.js [--dist <dir>]. Exit code 1 when anything is flagged.
import ts from 'typescript'
import { mkdtempSync, rmSync, existsSync, mkdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

/** Implementation types: never part of the published API, whatever the rule above says. */
const INTERNAL = new Set([
  'Connection', 'ConnectionOptions', 'SocketContext', 'SocketLog', 'TopicHub', 'Held', 'HeldMessages',
  'PluginState', 'RouteState', 'PendingUpgrade', 'ResolvedOptions', 'Registry', 'AnyWebSocketHandler',
  'Receiver', 'ReceiverHost', 'Sender', 'PerMessageDeflate', 'DeflateParams', 'Limiter',
  'ClosingError', 'AcceptedHandshake', 'DuplexEnd', 'UpgradeListener', 'OriginCheck'
])
const NO_PUBLIC_CONSTRUCTOR = new Set(['WebSocket', 'WebSocketServer'])
const ERRORS_ALLOWED = (name) => /^FST_WS_[A-Z0-9_]+$/.test(name) || name === 'HandshakeRejectedError' || name === 'WebSocketError' || name === 'InvalidMessageError'

/** Decoded declaration maps, by .d.ts file. */
const maps = new Map()
const distArg = process.argv.indexOf('--dist')
let scratch = null
let libDir
if (distArg !== -1) {
  libDir = resolve(process.argv[distArg + 1] ?? 'dist', 'lib')
  if (!existsSync(join(libDir, 'index.d.ts'))) {
    process.stderr.write(`check-dts: ${relative(root, join(libDir, 'index.d.ts'))} is missing: run \`npm run build\` first\n`)
    process.exit(1)
  }
} else {
  // Inside the repository, so the declarations resolve 'fastify' and the rest from its node_modules.
  mkdirSync(join(root, 'dist'), { recursive: true })
  scratch = mkdtempSync(join(root, 'dist', '.check-dts-'))
  emitDeclarations(scratch)
  libDir = join(scratch, 'lib')
}

try {
  const offences = check(libDir)
  for (const o of offences) process.stdout.write(`${o}\n`)
  const checked = scratch !== null ? 'lib/index.ts, declarations emitted as `npm run build` does' : relative(root, join(libDir, 'index.d.ts'))
  process.stdout.write(`check-dts: ${offences.length === 0 ? 'ok' : `${offences.length} offence(s)`} in the declarations reachable from ${checked}\n`)
  process.exitCode = offences.length === 0 ? 0 : 1
} finally {
  if (scratch !== null) rmSync(scratch, { recursive: true, force: true })
}

function emitDeclarations (outDir) {
  const configPath = join(root, 'tsconfig.build.json')
  const config = ts.getParsedCommandLineOfConfigFile(configPath, {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => { throw new Error(ts.flattenDiagnosticMessageText(d.messageText, '\n')) } })
  // Declaration maps lead each offence back to its line in lib/.
  const options = { ...config.options, outDir, declaration: true, emitDeclarationOnly: true, sourceMap: false, declarationMap: true, noEmit: false, noEmitOnError: false }
  const program = ts.createProgram([join(root, 'lib/index.ts')], options)
  // Type errors are the typecheck step's business; the declarations are emitted regardless.
  program.emit()
  if (!existsSync(join(outDir, 'lib/index.d.ts'))) throw new Error('check-dts: no declarations were emitted')
}

function check (libDir) {
  const entry = join(libDir, 'index.d.ts')
  const program = ts.createProgram([entry], {
    strict: true, noEmit: true, skipLibCheck: false, types: ['node'],
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext, target: ts.ScriptTarget.ES2022
  })
  const checker = program.getTypeChecker()
  const offences = []
  const inLib = (file) => resolve(file).startsWith(libDir + '/')
  const where = (node) => {
    const sf = node.getSourceFile()
    return locate(sf.fileName, sf.getLineAndCharacterOfPosition(node.getStart(sf)).line)
  }

  // 1. The declarations compile on their own.
  for (const sf of program.getSourceFiles()) {
    if (!inLib(sf.fileName)) continue
    for (const d of [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0)
      offences.push(`${locate(d.file.fileName, line)} does not compile: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`)
    }
  }

  const resolveAlias = (symbol) => (symbol.flags & ts.SymbolFlags.Alias) !== 0 ? checker.getAliasedSymbol(symbol) : symbol
  const entryModule = checker.getSymbolAtLocation(program.getSourceFile(entry))
  const publicSymbols = new Set()
  const worklist = [] // [declaration node, how it was reached]

  // 2. The roots: the entry's exports, `errors`' exports, the augmentations of 'fastify'.
  for (const exported of checker.getExportsOfModule(entryModule)) {
    const target = resolveAlias(exported)
    publicSymbols.add(target)
    if (INTERNAL.has(exported.name)) offences.push(`${where(exported.declarations[0])} exports ${exported.name}, an internal type`)
    if (exported.name === 'errors' && (target.flags & ts.SymbolFlags.ValueModule) !== 0) {
      for (const e of checker.getExportsOfModule(target)) {
        const t = resolveAlias(e)
        publicSymbols.add(t)
        if (!ERRORS_ALLOWED(e.name)) {
          offences.push(`${where(t.declarations[0])} errors.${e.name} is exported through \`errors\`, which holds error constructors only`)
          continue
        }
        for (const d of t.declarations ?? []) worklist.push([d, `errors.${e.name}`])
      }
      continue
    }
    for (const d of target.declarations ?? []) worklist.push([d, exported.name])
  }
  for (const sf of program.getSourceFiles()) {
    if (!inLib(sf.fileName)) continue
    for (const statement of sf.statements) {
      if (ts.isModuleDeclaration(statement) && ts.isStringLiteral(statement.name)) worklist.push([statement, `declare module '${statement.name.text}'`])
    }
  }

  // 3. Walk what each reached declaration mentions.
  const seen = new Set()
  // The statement of its file a declaration belongs to (for a declaration inside `declare module 'fastify'`,
  // the augmentation: those interfaces are Fastify's, and public).
  const topLevel = (node) => {
    let n = node
    while (n.parent !== undefined && !ts.isSourceFile(n.parent)) n = n.parent
    return n.parent === undefined ? null : n
  }
  const declName = (node) => {
    if (ts.isVariableStatement(node)) return node.declarationList.declarations.map((d) => d.name.getText()).join(', ')
    return node.name?.getText() ?? '(anonymous)'
  }
  const isPrivate = (member) => (ts.getCombinedModifierFlags(member) & ts.ModifierFlags.Private) !== 0 ||
    (member.name !== undefined && ts.isPrivateIdentifier(member.name))

  while (worklist.length > 0) {
    const [node, via] = worklist.pop()
    const top = topLevel(node)
    if (top === null || seen.has(top) || !inLib(top.getSourceFile().fileName)) continue
    seen.add(top)
    const name = declName(top)
    const isAugmentation = ts.isModuleDeclaration(top) && ts.isStringLiteral(top.name)
    if (!isAugmentation && !ts.isImportDeclaration(top) && !ts.isExportDeclaration(top)) {
      const symbol = ts.isVariableStatement(top) ? checker.getSymbolAtLocation(top.declarationList.declarations[0].name) : (top.name && checker.getSymbolAtLocation(top.name))
      const isPublic = symbol !== undefined && publicSymbols.has(symbol)
      if (INTERNAL.has(name)) offences.push(`${where(top)} ${name} is internal and reachable from the public API via ${via}`)
      else if (!isPublic) offences.push(`${where(top)} ${name} is not exported from the entry point but is reachable from the public API via ${via}`)
    }
    if (ts.isClassDeclaration(top) && NO_PUBLIC_CONSTRUCTOR.has(name) && !top.members.some(ts.isConstructorDeclaration)) {
      offences.push(`${where(top)} ${name}: declares no constructor, so \`new ${name}()\` type-checks through ${top.heritageClauses === undefined ? 'the default constructor' : 'the base class'} (declare a private one)`)
    }
    visit(top, name)
  }

  function visit (node, owner) {
    if ((ts.isClassElement(node) || ts.isTypeElement(node)) && node.parent !== undefined &&
        (ts.isClassDeclaration(node.parent) || ts.isInterfaceDeclaration(node.parent))) {
      const container = node.parent.name?.getText() ?? '(anonymous)'
      if (isPrivate(node)) return // a private member's name is in the .d.ts, its type is not
      const memberName = node.name !== undefined ? node.name.getText() : ''
      if (memberName.startsWith('_')) {
        offences.push(`${where(node)} ${container}.${memberName}: a member starting with "_" is visible`)
        return
      }
      if (ts.isConstructorDeclaration(node) && NO_PUBLIC_CONSTRUCTOR.has(container) &&
          (ts.getCombinedModifierFlags(node) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) === 0) {
        offences.push(`${where(node)} ${container}: its constructor is public (sockets and the server are created by the plugin)`)
        return
      }
    }
    if (ts.isIdentifier(node) && !isDeclarationName(node)) {
      const symbol = checker.getSymbolAtLocation(node)
      if (symbol !== undefined) {
        for (const d of resolveAlias(symbol).declarations ?? []) {
          if (inLib(d.getSourceFile().fileName)) worklist.push([d, owner])
        }
      }
    }
    if (ts.isImportTypeNode(node) && node.qualifier !== undefined) {
      const type = checker.getTypeFromTypeNode(node)
      const symbol = type.aliasSymbol ?? type.getSymbol()
      for (const d of symbol?.declarations ?? []) {
        if (inLib(d.getSourceFile().fileName)) worklist.push([d, owner])
      }
    }
    ts.forEachChild(node, (child) => visit(child, owner))
  }

  function isDeclarationName (id) {
    const p = id.parent
    return p !== undefined && 'name' in p && p.name === id && !ts.isQualifiedName(p) && !ts.isPropertyAccessExpression(p) && !ts.isImportTypeNode(p)
  }

  return offences
}

/** "lib/x.ts:12 (dist/lib/x.d.ts:14)" through the declaration map when there is one, else the .d.ts position. */
function locate (dtsFile, line) {
  const shown = scratch !== null ? join('dist', relative(scratch, dtsFile)) : relative(process.cwd(), dtsFile)
  const source = sourceLine(dtsFile, line)
  return source === null ? `${shown}:${line + 1}` : `${source} (${shown}:${line + 1})`
}

function sourceLine (dtsFile, line) {
  if (!maps.has(dtsFile)) maps.set(dtsFile, existsSync(`${dtsFile}.map`) ? decodeLines(JSON.parse(readFileSync(`${dtsFile}.map`, 'utf8')), dirname(dtsFile)) : null)
  const lines = maps.get(dtsFile)
  const hit = lines?.[line]
  return hit === undefined || hit === null ? null : `${relative(process.cwd(), hit.file)}:${hit.line + 1}`
}

/** For each generated line, the source position of its first mapping (source map v3, base64 VLQ). */
function decodeLines (map, dir) {
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  const out = []
  let source = 0
  let sourceLineNo = 0
  for (const group of map.mappings.split(';')) {
    let first = null
    for (const segment of group.split(',')) {
      if (segment === '') continue
      const values = []
      let value = 0
      let shift = 0
      for (const ch of segment) {
        const digit = B64.indexOf(ch)
        value += (digit & 31) << shift
        if ((digit & 32) !== 0) { shift += 5; continue }
        values.push((value & 1) !== 0 ? -(value >>> 1) : value >>> 1)
        value = 0
        shift = 0
      }
      if (values.length >= 4) {
        source += values[1]
        sourceLineNo += values[2]
        first ??= { file: resolve(dir, map.sourceRoot ?? '', map.sources[source]), line: sourceLineNo }
      }
    }
    out.push(first)
  }
  return out
}
