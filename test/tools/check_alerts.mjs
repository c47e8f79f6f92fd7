// Checks Prometheus alert rules against the app: every rule is complete, every expression
// parses under the Prometheus project's own PromQL grammar, and every metric it names is one
// the app exports. Usage: node check_alerts.mjs RULES.yml METRICS.txt, where METRICS.txt is
// a scrape of /metrics (its "# TYPE" lines name the metrics). Exit status 1 lists problems.
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { parser } from '@prometheus-io/lezer-promql';

const [rulesPath, metricsPath] = process.argv.slice(2);
if (!rulesPath || !metricsPath) {
    console.error('usage: node check_alerts.mjs RULES.yml METRICS.txt');
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
let doc;
try {
    doc = parse(readFileSync(rulesPath, 'utf8'));
} catch (e) {
    console.error(`${rulesPath}: ${e.message}`);
    process.exit(1);
}

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

const groups = doc?.groups;
if (!Array.isArray(groups) || groups.length === 0)
    problems.push(`${rulesPath}: no "groups"`);
const alerts = new Set();
let n = 0;
for (const g of groups ?? []) {
    if (typeof g?.name !== 'string' || !Array.isArray(g.rules) || g.rules.length === 0) {
        problems.push(`${rulesPath}: a group needs a name and rules`);
        continue;
    }
    for (const r of g.rules) {
        const where = `${g.name}/${r?.alert ?? '(no alert name)'}`;
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
            problems.push(`${where}: labels.severity must be one of ${[...SEVERITIES].join(', ')}`);
        if (typeof r?.annotations?.summary !== 'string' || r.annotations.summary.trim() === '')
            problems.push(`${where}: annotations.summary is missing`);
        if (typeof r?.expr !== 'string' || r.expr.trim() === '') {
            problems.push(`${where}: "expr" is missing`);
            continue;
        }
        const names = metricsOf(where, r.expr);
        if (names.length === 0)
            problems.push(`${where}: the expression selects no metric`);
        for (const name of names)
            if (!exported.has(name) && !SYNTHETIC.has(name))
                problems.push(`${where}: the app exports no metric "${name}"`);
    }
}

if (problems.length) {
    problems.forEach((p) => console.error(`alerts: ${p}`));
    process.exit(1);
}
console.log(`alerts: ${n} rules in ${groups.length} groups parse and use only the ` +
    `${exported.size} metrics the app exports`);
