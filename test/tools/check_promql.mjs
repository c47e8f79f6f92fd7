// Checks the PromQL we ship against the app: Prometheus alert rules (*.yml: every rule
// complete) and Grafana dashboards (*.json: every panel query). Every expression must parse
// under the Prometheus project's own PromQL grammar and name only metrics the app exports.
// Usage: node check_promql.mjs METRICS.txt FILE..., where METRICS.txt is a scrape of
// /metrics (its "# TYPE" lines name the metrics). Exit status 1 lists the problems.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { parser } from '@prometheus-io/lezer-promql';

const [metricsPath, ...files] = process.argv.slice(2);
if (!metricsPath || files.length === 0) {
    console.error('usage: node check_promql.mjs METRICS.txt RULES.yml|DASHBOARD.json...');
    process.exit(2);
}

// Series Prometheus adds to every target by itself.
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped',
    'scrape_samples_post_metric_relabeling', 'scrape_series_added']);
const SEVERITIES = new Set(['critical', 'warning', 'info']);
const RULE_KEYS = new Set(['alert', 'expr', 'for', 'keep_firing_for', 'labels', 'annotations']);
const DURATION = /^([0-9]+(ms|s|m|h|d|w|y))+$/;

const exported = new Set();
for (const line of readFileSync(metricsPath, 'utf8').split('\n')) {
    const m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/
        .exec(line);
    if (!m)
        continue;
    exported.add(m[1]);
    if (m[2] === 'histogram')
        ['_bucket', '_sum', '_count'].forEach((s) => exported.add(m[1] + s));
    if (m[2] === 'summary')
        ['_sum', '_count'].forEach((s) => exported.add(m[1] + s));
}

const problems = [];
// The metric names an expression selects, or problems when it does not parse.
function metricsOf(where, expr) {
    const names = [];
    parser.parse(expr).iterate({
        enter: (n) => {
            if (n.type.isError) {
                problems.push(`${where}: the expression does not parse at character ${n.from + 1}` +
                    ` ("${expr.slice(Math.max(0, n.from - 10), n.from + 10).trim()}")`);
                return false;
            }
            if (n.name === 'Identifier' && n.node.parent?.name === 'VectorSelector')
                names.push(expr.slice(n.from, n.to));
            return true;
        },
    });
    return names;
}

// Grafana fills these in before Prometheus sees a query; any valid stand-in will do here.
function withoutGrafanaVariables(expr) {
    return expr.replace(/\$__(rate_interval|interval|range)\b/g, '5m')
        .replace(/\$\{\w+(:\w+)?\}|\$\w+/g, 'x');
}

function checkExpr(where, expr) {
    if (typeof expr !== 'string' || expr.trim() === '') {
        problems.push(`${where}: the expression is missing`);
        return;
    }
    const names = metricsOf(where, withoutGrafanaVariables(expr));
    if (names.length === 0)
        problems.push(`${where}: the expression selects no metric`);
    for (const name of names)
        if (!exported.has(name) && !SYNTHETIC.has(name))
            problems.push(`${where}: the app exports no metric "${name}"`);
}

function checkRules(path, doc) {
    const groups = doc?.groups;
    if (!Array.isArray(groups) || groups.length === 0) {
        problems.push(`${path}: no "groups"`);
        return 'no rules';
    }
    const alerts = new Set();
    let n = 0;
    for (const g of groups) {
        if (typeof g?.name !== 'string' || !Array.isArray(g.rules) || g.rules.length === 0) {
            problems.push(`${path}: a group needs a name and rules`);
            continue;
        }
        for (const r of g.rules) {
            const where = `${path}: ${g.name}/${r?.alert ?? '(no alert name)'}`;
            n++;
            for (const key of Object.keys(r ?? {}))
                if (!RULE_KEYS.has(key))
                    problems.push(`${where}: unknown key "${key}"`);
            if (typeof r?.alert !== 'string' || !/^[A-Za-z][A-Za-z0-9_]*$/.test(r.alert))
                problems.push(`${where}: "alert" must be a name`);
            else if (alerts.has(r.alert))
                problems.push(`${where}: a second alert with this name`);
            alerts.add(r?.alert);
            if (r?.for !== undefined && !DURATION.test(String(r.for)))
                problems.push(`${where}: "for" is not a duration: ${r.for}`);
            if (!SEVERITIES.has(r?.labels?.severity))
                problems.push(`${where}: labels.severity must be one of ` +
                    [...SEVERITIES].join(', '));
            if (typeof r?.annotations?.summary !== 'string' || r.annotations.summary.trim() === '')
                problems.push(`${where}: annotations.summary is missing`);
            checkExpr(where, r?.expr);
        }
    }
    return `${n} rules in ${groups.length} groups`;
}

function checkDashboard(path, doc) {
    if (typeof doc?.title !== 'string' || typeof doc?.uid !== 'string' ||
        !Array.isArray(doc?.panels)) {
        problems.push(`${path}: a dashboard needs a title, a uid and panels`);
        return 'no panels';
    }
    const ids = new Set();
    let queries = 0;
    const visit = (panels) => {
        for (const p of panels) {
            const where = `${path}: panel ${p?.id} "${p?.title}"`;
            if (!Number.isInteger(p?.id) || ids.has(p.id))
                problems.push(`${where}: every panel needs an id of its own`);
            ids.add(p?.id);
            const g = p?.gridPos;
            if (!g || ![g.h, g.w, g.x, g.y].every(Number.isInteger) || g.x + g.w > 24)
                problems.push(`${where}: gridPos must place it within 24 columns`);
            if (p?.type === 'row') {
                visit(p.panels ?? []);
                continue;
            }
            if (!Array.isArray(p?.targets) || p.targets.length === 0)
                problems.push(`${where}: no query`);
            for (const t of p?.targets ?? []) {
                queries++;
                checkExpr(`${where} ${t?.refId ?? ''}`.trim(), t?.expr);
            }
        }
    };
    visit(doc.panels);
    return `${ids.size} panels with ${queries} queries`;
}

const done = [];
for (const path of files) {
    let doc;
    try {
        const text = readFileSync(path, 'utf8');
        doc = path.endsWith('.json') ? JSON.parse(text) : parse(text);
    } catch (e) {
        problems.push(`${path}: ${e.message}`);
        continue;
    }
    done.push(`${path}: ${path.endsWith('.json') ? checkDashboard(path, doc) : checkRules(path, doc)}`);
}

if (problems.length) {
    problems.forEach((p) => console.error(`promql: ${p}`));
    process.exit(1);
}
console.log(`promql: ${done.join('; ')}; all parse and use only the ${exported.size} ` +
    'metrics the app exports');
